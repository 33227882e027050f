import Crypto
import KeyperBase
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// A response whose body went to a file as it arrived (a `200`), with the body's SHA-256;
/// any other status keeps its (error) body in ``HTTPResult/body``.
public struct Download: Sendable {
    public var result: HTTPResult
    /// Bytes written to the file.
    public var bytes: Int
    /// The SHA-256 of those bytes, lowercase hex.
    public var sha256: String
}

extension HTTPRequester {
    /// `GET url`, the body of a `200` streamed into the file at `path` (created or truncated,
    /// fsynced before this returns) while its SHA-256 is computed; memory stays small whatever
    /// the size. `timeout` bounds the whole transfer.
    public static func download(_ url: String, to path: String, timeout: Duration = .seconds(3600),
                                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> Download {
        try await exchange(.GET, url, body: nil, headers: [], connectTimeout: .seconds(10), timeout: timeout, group: group) {
            FileCollector(path: path, promise: $0)
        }
    }
}

/// Writes a `200`'s body to a file (on the event loop: a client's only work) and hashes it.
final class FileCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    private let path: String
    private let promise: EventLoopPromise<Download>
    private var result = HTTPResult(status: 0, headers: [], body: [])
    private var file: Int32 = -1
    private var hasher = SHA256()
    private var bytes = 0
    private var done = false

    init(path: String, promise: EventLoopPromise<Download>) {
        self.path = path
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            result.status = Int(head.status.code)
            result.headers = head.headers.map { ($0.name, $0.value) }
            if result.status == 200 {
                file = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                if file < 0 { fail(HTTPRequestError("cannot create \(path): errno \(errno)"), context: context) }
            }
        case .body(let buffer):
            guard result.status == 200 else {
                result.body += Array(buffer: buffer)
                return
            }
            let chunk = Array(buffer: buffer)
            var written = 0
            while written < chunk.count {
                let count = chunk.withUnsafeBytes { write(file, $0.baseAddress! + written, chunk.count - written) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else {
                    fail(HTTPRequestError("cannot write \(path): errno \(errno)"), context: context)
                    return
                }
                written += count
            }
            hasher.update(data: chunk)
            bytes += chunk.count
        case .end:
            done = true
            if file >= 0 {
                let synced = fsync(file) == 0
                close(file)
                file = -1
                guard synced else {
                    promise.fail(HTTPRequestError("cannot fsync \(path): errno \(errno)"))
                    return
                }
            }
            promise.succeed(Download(result: result, bytes: bytes, sha256: hasher.finalize().hex))
        }
    }

    private func fail(_ error: any Error, context: ChannelHandlerContext) {
        done = true
        if file >= 0 {
            close(file)
            file = -1
        }
        promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done { fail(HTTPRequestError("connection closed before the whole response"), context: context) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done { fail(error, context: context) }
    }
}

extension SHA256.Digest {
    /// Lowercase hex, as `X-Keyper-Snapshot-SHA256` carries it.
    public var hex: String {
        map { byte in (byte < 16 ? "0" : "") + String(byte, radix: 16) }.joined()
    }
}
