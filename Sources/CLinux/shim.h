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

#include <sys/types.h>
#include <sys/uio.h>

// preadv2(2), likewise.
extern ssize_t preadv2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags);

/// Reads `count` bytes at `offset` only if they are in the page cache (RWF_NOWAIT): returns
/// how many were read, or -1 with errno EAGAIN when reading would wait for the disk (or
/// another errno; EOPNOTSUPP where the file system cannot tell).
static inline ssize_t keyper_pread_nowait(int fd, void *buffer, size_t count, off_t offset) {
    struct iovec vector = { buffer, count };
    return preadv2(fd, &vector, 1, offset, 0x00000008 /* RWF_NOWAIT */);
}

#endif
