#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call, with the path it was about and `errno`.
public struct FileIOError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let path: String
    public let errorNumber: Int32
    public var description: String { "\(operation) \(path): \(FileIO.errnoDescription(errorNumber))" }

    public init(operation: String, path: String, errorNumber: Int32) {
        self.operation = operation
        self.path = path
        self.errorNumber = errorNumber
    }
    /// ENOSPC or EDQUOT: out of space, a condition that can clear.
    public var isDiskFull: Bool { errorNumber == ENOSPC || errorNumber == EDQUOT }
}

/// Small POSIX helpers for files that must be durable. No Foundation: these sit on the write path.
public enum FileIO {
    public static func errnoDescription(_ code: Int32 = errno) -> String {
        String(cString: strerror(code)) + " (errno \(code))"
    }

    /// `mkdir -p`.
    public static func makeDirectories(_ path: String) throws(FileIOError) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw FileIOError(operation: "mkdir", path: prefix, errorNumber: errno)
            }
            prefix += "/"
        }
    }

    public static func listDirectory(_ path: String) throws(FileIOError) -> [String] {
        guard let directory = opendir(path) else {
            throw FileIOError(operation: "opendir", path: path, errorNumber: errno)
        }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public static func readFile(_ path: String) throws(FileIOError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileIOError(operation: "open", path: path, errorNumber: errno) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw FileIOError(operation: "read", path: path, errorNumber: errno)
            }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
        }
    }

    /// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(FileIOError) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { raw in
                write(fd, raw.baseAddress! + offset, raw.count - offset)
            }
            if written < 0 {
                if errno == EINTR { continue }
                throw FileIOError(operation: "write", path: path, errorNumber: errno)
            }
            offset += written
        }
    }

    /// Replaces `path` with `bytes` so that a crash leaves either the old or the new file:
    /// write a temporary file, fsync it, rename it over, fsync the directory.
    public static func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws(FileIOError) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileIOError(operation: "open", path: temporary, errorNumber: errno) }
        do throws(FileIOError) {
            try writeAll(fd, bytes, path: temporary)
            guard fsync(fd) == 0 else { throw FileIOError(operation: "fsync", path: temporary, errorNumber: errno) }
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            throw FileIOError(operation: "rename", path: temporary, errorNumber: errno)
        }
        try syncDirectory(containing: path)
    }

    /// fsyncs a file's data and metadata.
    public static func syncFile(_ path: String) throws(FileIOError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileIOError(operation: "open", path: path, errorNumber: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw FileIOError(operation: "fsync", path: path, errorNumber: errno) }
    }

    /// Writes `bytes` at `offset` of `path` (creating it), without syncing.
    public static func writeBytes(_ bytes: [UInt8], to path: String, at offset: Int) throws(FileIOError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileIOError(operation: "open", path: path, errorNumber: errno) }
        defer { close(fd) }
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { raw in
                pwrite(fd, raw.baseAddress! + written, raw.count - written, off_t(offset + written))
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw FileIOError(operation: "pwrite", path: path, errorNumber: errno)
            }
            written += count
        }
    }

    /// Copies `source` to `destination` durably (temporary file, fsync, rename, directory fsync).
    public static func copyFileAtomically(from source: String, to destination: String) throws(FileIOError) {
        let temporary = destination + ".tmp"
        do throws(FileIOError) {
            try copyFile(from: source, to: temporary)
            try renameDurably(from: temporary, to: destination)
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Copies `source` to a new file `destination` (replacing any file there) and fsyncs it.
    /// The bytes move inside the kernel (`sendfile`), never through this process's memory, so a
    /// gigabyte costs neither a gigabyte of RAM nor two copies through user space.
    public static func copyFile(from source: String, to destination: String) throws(FileIOError) {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw FileIOError(operation: "open", path: source, errorNumber: errno) }
        defer { close(input) }
        var status = stat()
        guard fstat(input, &status) == 0 else { throw FileIOError(operation: "fstat", path: source, errorNumber: errno) }
        let output = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw FileIOError(operation: "open", path: destination, errorNumber: errno) }
        defer { close(output) }
        let total = Int(status.st_size)
        var copied = 0
        while copied < total {
            // Bounded steps, so a huge file never asks for one transfer larger than sendfile takes.
            let count = sendfile(output, input, nil, min(total - copied, copyStepBytesMax))
            if count < 0 {
                if errno == EINTR { continue }
                if copied == 0 && (errno == EINVAL || errno == ENOSYS) {
                    // A file system whose files sendfile cannot read: copy through a buffer.
                    return try copyThroughBuffer(input, output, source: source, destination: destination)
                }
                throw FileIOError(operation: "sendfile", path: destination, errorNumber: errno)
            }
            // The source shrank while we copied: a short copy is not a copy.
            guard count > 0 else { throw FileIOError(operation: "sendfile (source shorter than its size)", path: source, errorNumber: EIO) }
            copied += count
        }
        guard fsync(output) == 0 else { throw FileIOError(operation: "fsync", path: destination, errorNumber: errno) }
    }

    static let copyStepBytesMax = 64 << 20

    private static func copyThroughBuffer(_ input: Int32, _ output: Int32, source: String,
                                          destination: String) throws(FileIOError) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var offset = 0
        while true {
            let count = try readFully(input, into: buffer, at: offset, path: source)
            if count == 0 { break }
            try writeAll(output, Array(buffer[..<count]), path: destination)
            offset += count
        }
        guard fsync(output) == 0 else { throw FileIOError(operation: "fsync", path: destination, errorNumber: errno) }
    }

    /// Renames `source` to `destination` (replacing it) and fsyncs the destination's directory,
    /// so the new name survives a crash. Both must be on one file system.
    public static func renameDurably(from source: String, to destination: String) throws(FileIOError) {
        guard rename(source, destination) == 0 else {
            throw FileIOError(operation: "rename", path: source, errorNumber: errno)
        }
        try syncDirectory(containing: destination)
    }

    /// Reads up to `buffer.count` bytes at `offset` of the open file `fd` (pread, retrying short
    /// reads and EINTR). Returns how many were read: fewer only at the end of the file.
    public static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int,
                                 path: String) throws(FileIOError) -> Int {
        var done = 0
        while done < buffer.count {
            let count = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if count < 0 {
                if errno == EINTR { continue }
                throw FileIOError(operation: "pread", path: path, errorNumber: errno)
            }
            if count == 0 { break }
            done += count
        }
        return done
    }

    /// fsyncs the directory that holds `path`, making a create or rename in it durable.
    /// Removes `path` and, for a directory, everything under it (scratch directories of tests
    /// and simulations; no sync). Symbolic links are removed, not followed.
    public static func removeTree(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            for name in (try? listDirectory(path)) ?? [] { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    /// Removes the file at `path` if there is one (a scratch file; no sync).
    public static func removeIfPresent(_ path: String) {
        unlink(path)
    }

    public static func syncDirectory(containing path: String) throws(FileIOError) {
        let directory: String
        if let slash = path.lastIndex(of: "/") {
            directory = slash == path.startIndex ? "/" : String(path[..<slash])
        } else {
            directory = "."
        }
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw FileIOError(operation: "open", path: directory, errorNumber: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw FileIOError(operation: "fsync", path: directory, errorNumber: errno) }
    }
}
