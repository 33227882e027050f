import Crypto
import HTTPTypes
import Hummingbird
import KeyperClient
import KeyperStorage
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

extension HTTPField.Name {
    /// A backup's SHA-256 (lowercase hex), so a client can check what it received.
    static let keyperSnapshotSHA256 = HTTPField.Name("X-Keyper-Snapshot-SHA256")!
}

/// `GET /v1/snapshot`: a backup of the whole state, streamed. It is a consistent copy as of one
/// point (a Raft node first runs a read barrier, so it holds every write acknowledged before the
/// request), in the state machine's own file format, which `keyper snapshot restore` reads.
enum SnapshotAPI {
    static let chunkBytes = 1 << 20

    static func stream(node: some KeyValueNode) async throws -> Response {
        let backup = try await node.backup()
        let file = open(backup.path, O_RDONLY | O_CLOEXEC)
        guard file >= 0 else {
            unlink(backup.path)
            throw APIError.internalError("cannot open the backup \(backup.path): errno \(errno)")
        }
        // The file is gone from the directory at once; the descriptor keeps it until closed.
        unlink(backup.path)
        let descriptor = FileDescriptor(file)
        let (digest, bytes): (String, Int)
        do {
            (digest, bytes) = try await DiskReads.pool.runIfActive { try descriptor.sha256() }
        } catch {
            descriptor.close()
            throw StorageFailure.map(error)
        }
        var headers = HTTPFields()
        headers[.contentType] = "application/octet-stream"
        headers[.contentDisposition] = "attachment; filename=\"keyper-\(backup.revision).snapshot\""
        headers[.keyperSnapshotSHA256] = digest
        headers[.keyperRevision] = String(backup.revision)
        headers[.keyperAppliedIndex] = String(backup.appliedIndex)
        let body = ResponseBody(contentLength: bytes) { writer in
            defer { descriptor.close() }
            var offset = 0
            while offset < bytes {
                let at = offset
                let chunk = try await DiskReads.pool.runIfActive { try descriptor.read(at: at, count: min(chunkBytes, bytes - at)) }
                guard !chunk.isEmpty else { throw APIError.internalError("the backup ended at \(offset) of \(bytes) bytes") }
                try await writer.write(ByteBuffer(bytes: chunk))
                offset += chunk.count
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }
}

/// An open file read at offsets from any thread, closed once (at the latest when released:
/// a response whose body was never written still closes it).
final class FileDescriptor: Sendable {
    private let descriptor: Int32
    private let isOpen = Mutex(true)

    init(_ descriptor: Int32) {
        self.descriptor = descriptor
    }

    deinit { close() }

    func close() {
        guard isOpen.withLock({ open in defer { open = false }; return open }) else { return }
        _ = Glibc.close(descriptor)
    }

    func read(at offset: Int, count: Int) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            var done = 0
            while done < count {
                let got = pread(descriptor, buffer.baseAddress! + done, count - done, off_t(offset + done))
                if got < 0 && errno == EINTR { continue }
                guard got >= 0 else { throw FileIOError(operation: "pread", path: "backup", errorNumber: errno) }
                if got == 0 { break }
                done += got
            }
            initialized = done
        }
    }

    /// The whole file's SHA-256 (lowercase hex) and length.
    func sha256() throws -> (String, Int) {
        var hasher = SHA256()
        var offset = 0
        while true {
            let chunk = try read(at: offset, count: SnapshotAPI.chunkBytes)
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
            offset += chunk.count
        }
        return (hasher.finalize().hex, offset)
    }
}
