#if canImport(Glibc)
import Glibc
#endif

/// The real file system, through Glibc: `open`, `pread`, `pwrite`, `fdatasync`, `ftruncate`,
/// `rename`, `unlink`, and `fsync` on directories.
public final class GlibcFileSystem: WALFileSystem, Sendable {
    public init() {}

    /// Creates missing parents too (`mkdir -p`), syncing each parent that gained an entry.
    public func createDirectory(_ path: String) throws(FileSystemError) {
        if mkdir(path, 0o755) == 0 {
            try syncDirectory(path.walParentDirectory)
            return
        }
        let code = errno
        if code == ENOENT && path.walParentDirectory != path {
            try createDirectory(path.walParentDirectory)
            return try createDirectory(path)
        }
        guard code == EEXIST else { throw FileSystemError(operation: "mkdir", path: path, errno: code) }
    }

    public func contentsOfDirectory(_ path: String) throws(FileSystemError) -> [String] {
        guard let directory = opendir(path) else { throw FileSystemError(operation: "opendir", path: path, errno: errno) }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) { pointer in
                String(cString: UnsafeRawPointer(pointer).assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func openFile(_ path: String, create: Bool) throws(FileSystemError) -> any WALFile {
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0)
        let descriptor = open(path, flags, 0o644)
        guard descriptor >= 0 else { throw FileSystemError(operation: "open", path: path, errno: errno) }
        return GlibcFile(path: path, descriptor: descriptor)
    }

    public func removeFile(_ path: String) throws(FileSystemError) {
        guard unlink(path) == 0 else { throw FileSystemError(operation: "unlink", path: path, errno: errno) }
    }

    public func rename(_ source: String, to destination: String) throws(FileSystemError) {
        guard Glibc.rename(source, destination) == 0 else {
            throw FileSystemError(operation: "rename", path: "\(source) -> \(destination)", errno: errno)
        }
    }

    public func lockFile(_ path: String) throws(FileSystemError) -> any WALFile {
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw FileSystemError(operation: "open", path: path, errno: errno) }
        // flock, not fcntl locks: fcntl locks are per process and would let a second open in
        // the same process succeed; flock locks belong to the open file description.
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            Glibc.close(descriptor)
            throw FileSystemError(operation: "flock", path: path, errno: code)
        }
        return GlibcFile(path: path, descriptor: descriptor)
    }

    public func syncDirectory(_ path: String) throws(FileSystemError) {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw FileSystemError(operation: "open", path: path, errno: errno) }
        defer { Glibc.close(descriptor) }
        guard fsync(descriptor) == 0 else { throw FileSystemError(operation: "fsync", path: path, errno: errno) }
    }
}

/// An open file descriptor. Not thread-safe: owned by one WAL.
final class GlibcFile: WALFile {
    let path: String
    private var descriptor: Int32

    init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    deinit { close() }

    func size() throws(FileSystemError) -> Int64 {
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw FileSystemError(operation: "fstat", path: path, errno: errno) }
        return Int64(status.st_size)
    }

    func read(at offset: Int64, count: Int) throws(FileSystemError) -> [UInt8] {
        precondition(count >= 0 && offset >= 0, "offset=\(offset) count=\(count)")
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        var failure: Int32 = 0
        buffer.withUnsafeMutableBytes { raw in
            while done < count {
                let result = pread(descriptor, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if result > 0 {
                    done += result
                } else if result == 0 {
                    break  // end of file
                } else if errno != EINTR {
                    failure = errno
                    break
                }
            }
        }
        if failure != 0 { throw FileSystemError(operation: "pread", path: path, errno: failure) }
        if done < count { buffer.removeSubrange(done...) }
        return buffer
    }

    func write(_ bytes: [UInt8], at offset: Int64) throws(FileSystemError) {
        var done = 0
        var failure: Int32 = 0
        bytes.withUnsafeBytes { raw in
            while done < raw.count {
                let result = pwrite(descriptor, raw.baseAddress! + done, raw.count - done, off_t(offset) + off_t(done))
                if result > 0 {
                    done += result
                } else if result == 0 {
                    failure = EIO  // no progress on a non-empty write: never loop forever
                    break
                } else if errno != EINTR {
                    failure = errno
                    break
                }
            }
        }
        if failure != 0 { throw FileSystemError(operation: "pwrite", path: path, errno: failure) }
    }

    func sync() throws(FileSystemError) {
        guard fdatasync(descriptor) == 0 else { throw FileSystemError(operation: "fdatasync", path: path, errno: errno) }
    }

    func truncate(to size: Int64) throws(FileSystemError) {
        guard ftruncate(descriptor, off_t(size)) == 0 else { throw FileSystemError(operation: "ftruncate", path: path, errno: errno) }
    }

    func close() {
        if descriptor >= 0 {
            Glibc.close(descriptor)
            descriptor = -1
        }
    }
}
