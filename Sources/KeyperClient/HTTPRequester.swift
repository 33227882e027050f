import KeyperBase
import NIOCore
import NIOHTTP1
import NIOPosix

/// A response as ``HTTPRequester`` returns it.
public struct HTTPResult: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// Why a request got no HTTP answer.
public struct HTTPRequestError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A small HTTP/1.1 client: one request per connection, a deadline on the whole exchange.
/// Enough for membership calls between nodes (`--join`, forwarding a join to the leader);
/// load generation wants kept-alive connections and lives elsewhere.
public enum HTTPRequester {
    /// `url` is `http://host:port/path?query`.
    public static func send(_ method: HTTPMethod, _ url: String, body: [UInt8]? = nil,
                            headers: [(String, String)] = [], timeout: Duration = .seconds(5),
                            group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> HTTPResult {
        try await exchange(method, url, body: body, headers: headers, connectTimeout: timeout, timeout: timeout, group: group) {
            ResponseCollector(promise: $0)
        }
    }

    /// One request on a connection of its own: `handler` (made on the connection's loop)
    /// completes the promise with the answer; `timeout` bounds the whole exchange.
    static func exchange<Answer: Sendable, Handler: ChannelInboundHandler>(
        _ method: HTTPMethod, _ url: String, body: [UInt8]?, headers: [(String, String)], connectTimeout: Duration,
        timeout: Duration, group: any EventLoopGroup, handler: @escaping @Sendable (EventLoopPromise<Answer>) -> Handler
    ) async throws -> Answer where Handler.InboundIn == HTTPClientResponsePart {
        guard let (target, path) = HostPort.parseURL(url) else { throw HTTPRequestError("not an http://host:port URL: \(url)") }
        let promise = group.next().makePromise(of: Answer.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(connectTimeout.nanoseconds))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(handler(promise))
                }
            }
            .connect(host: target.host, port: target.port)
            .get()
        } catch {
            // Every promise is completed, also when the connection never came up.
            promise.fail(error)
            throw error
        }
        let deadline = channel.eventLoop.scheduleTask(in: .nanoseconds(timeout.nanoseconds)) {
            promise.fail(HTTPRequestError("no answer from \(url) within \(timeout)"))
            channel.close(promise: nil)
        }
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: target.description)
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "Content-Length", value: String(body?.count ?? 0))
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body, !body.isEmpty {
            channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
        }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        defer {
            deadline.cancel()
            channel.close(promise: nil)
        }
        return try await promise.futureResult.get()
    }
}

/// Gathers one response and completes the promise with it.
final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    private let promise: EventLoopPromise<HTTPResult>
    private var result = HTTPResult(status: 0, headers: [], body: [])

    init(promise: EventLoopPromise<HTTPResult>) {
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            result.status = Int(head.status.code)
            result.headers = head.headers.map { ($0.name, $0.value) }
        case .body(let buffer):
            result.body += Array(buffer: buffer)
        case .end:
            promise.succeed(result)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(HTTPRequestError("connection closed before a complete response"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
