import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Watch streams held open during a run (`keyper bench --watchers N`): each follows the
/// bench's prefix (`GET /v1/watch?prefix=…`) and counts the events it receives, so a run
/// measures both what writes cost with watchers and how many events the server delivers.
final class WatchLoad: Sendable {
    let events = Atomic<UInt64>(0)
    /// Streams the server ended (`event: error`: lagging, shutting down) or that broke.
    let ended = Atomic<UInt64>(0)
    private let channels = Mutex<[any Channel]>([])

    /// Opens `count` streams spread over the endpoints; returns once every one has its
    /// response head (the server registered the watcher before answering).
    static func open(count: Int, options: BenchOptions, group: MultiThreadedEventLoopGroup) async throws -> WatchLoad {
        let load = WatchLoad()
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for number in 0..<count {
                tasks.addTask {
                    let endpoint = options.endpoints[number % options.endpoints.count]
                    let loop = group.next()
                    let opened = loop.makePromise(of: Void.self)
                    let channel = try await ClientBootstrap(group: loop)
                        .connectTimeout(.seconds(10))
                        .channelInitializer { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                                try channel.pipeline.syncOperations.addHandler(WatchHandler(load: load, opened: opened))
                            }
                        }
                        .connect(host: endpoint.host, port: endpoint.port)
                        .get()
                    load.channels.withLock { $0.append(channel) }
                    var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/watch?prefix=" + options.prefix)
                    head.headers.add(name: "Host", value: "\(endpoint.host):\(endpoint.port)")
                    channel.write(HTTPClientRequestPart.head(head), promise: nil)
                    try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
                    try await opened.futureResult.get()
                }
                // Not all at once: a burst of a thousand connects overflows a listen backlog.
                if number % 64 == 63 { try await tasks.next() }
            }
            try await tasks.waitForAll()
        }
        return load
    }

    func close() async {
        for channel in channels.withLock({ $0 }) { try? await channel.close() }
    }
}

/// Counts the events of one stream: each begins with an `id:` line after a blank line.
final class WatchHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private let load: WatchLoad
    private let opened: EventLoopPromise<Void>
    private var answered = false
    private var endCounted = false
    /// The last bytes of the previous chunk, so a pattern split across chunks is found once.
    private var eventTail: [UInt8] = []
    private var errorTail: [UInt8] = []
    private static let event = Array("\nid: ".utf8)
    private static let error = Array("event: error".utf8)

    init(load: WatchLoad, opened: EventLoopPromise<Void>) {
        self.load = load
        self.opened = opened
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            answered = true
            if head.status == .ok { opened.succeed(()) } else { opened.fail(BenchError("a watch was answered \(head.status.code)")) }
        case .body(let buffer):
            let chunk = Array(buffer.readableBytesView)
            let found = Self.count(Self.event, in: eventTail + chunk)
            if found > 0 { load.events.add(UInt64(found), ordering: .relaxed) }
            eventTail = Array((eventTail + chunk).suffix(Self.event.count - 1))
            if !endCounted, Self.count(Self.error, in: errorTail + chunk) > 0 {
                endCounted = true
                load.ended.add(1, ordering: .relaxed)
            }
            errorTail = Array((errorTail + chunk).suffix(Self.error.count - 1))
        case .end:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !answered {
            answered = true
            opened.fail(BenchError("a watch stream closed before its answer"))
        } else if !endCounted {
            endCounted = true
            load.ended.add(1, ordering: .relaxed)
        }
    }

    /// Occurrences of `pattern` in `bytes` (a tail shorter than the pattern holds none).
    private static func count(_ pattern: [UInt8], in bytes: [UInt8]) -> Int {
        guard bytes.count >= pattern.count else { return 0 }
        var found = 0
        var position = 0
        while position + pattern.count <= bytes.count {
            if bytes[position] == pattern[0], bytes[position..<(position + pattern.count)].elementsEqual(pattern) {
                found += 1
                position += pattern.count
            } else {
                position += 1
            }
        }
        return found
    }
}
