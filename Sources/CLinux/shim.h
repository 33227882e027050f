// Linux calls that Swift's Glibc module leaves out (they need _GNU_SOURCE).
#ifndef KEYPER_CLINUX_SHIM_H
#define KEYPER_CLINUX_SHIM_H

// sync_file_range(2), declared here rather than through <fcntl.h>, whose Swift module is
// built without _GNU_SOURCE.
extern int sync_file_range(int fd, long long offset, long long nbytes, unsigned int flags);

/// Starts writeback of a file range without waiting for it (SYNC_FILE_RANGE_WRITE), so a
/// later fdatasync has little left to write. Returns 0, or -1 with errno.
static inline int keyper_start_writeback(int fd, long long offset, long long count) {
    return sync_file_range(fd, offset, count, 2 /* SYNC_FILE_RANGE_WRITE */);
}

#endif
