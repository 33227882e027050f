import KeyperBase
import KeyperRaft
import NIOCore
import Testing
@testable import KeyperTransport

@Suite("Peer frames and handshakes")
struct FrameTests {
    @Test("frames written back to back decode one by one, and a partial frame waits for more")
    func framing() throws {
        var buffer = ByteBuffer()
        let payloads: [[UInt8]] = [[], [1], Array(repeating: 7, count: 1000)]
        for payload in payloads { buffer.writeFrame(payload) }
        for payload in payloads {
            let frame = try #require(try FrameDecoder.nextFrame(&buffer, frameBytesMax: 1 << 20))
            #expect(Array(buffer: frame) == payload)
        }
        #expect(try FrameDecoder.nextFrame(&buffer, frameBytesMax: 1 << 20) == nil)

        var partial = ByteBuffer()
        partial.writeFrame([1, 2, 3])
        partial.moveWriterIndex(to: partial.writerIndex - 1)
        #expect(try FrameDecoder.nextFrame(&partial, frameBytesMax: 1 << 20) == nil)
        #expect(partial.readableBytes == 6, "a partial frame must not be consumed")
    }

    @Test("a frame announcing more than the limit is refused before it is read")
    func oversize() {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(1 << 30), endianness: .little)
        #expect(throws: TransportError.frameTooLarge(1 << 30)) {
            try FrameDecoder.nextFrame(&buffer, frameBytesMax: FrameLimits.frameBytesMax)
        }
    }

    @Test("random and truncated input never traps the decoder (seeded fuzz)")
    func fuzz() {
        let seed = UInt64.random(in: 0...UInt64.max)
        var generator = SplitMix64(seed: seed)
        for _ in 0..<2_000 {
            var buffer = ByteBuffer(bytes: (0..<Int.random(in: 0..<64, using: &generator)).map { _ in
                UInt8.random(in: 0...255, using: &generator)
            })
            // Decode until it needs more data or refuses: either is fine, a trap is not.
            while (try? FrameDecoder.nextFrame(&buffer, frameBytesMax: 32)) ?? nil != nil {}
            _ = try? Handshake.decode(buffer)
        }
        let valid = Handshake(nodeID: "node1", clusterID: "c").encoded()
        for cut in 0..<valid.count {
            #expect(throws: TransportError.self, "seed=\(seed) cut=\(cut)") { try Handshake.decode(ByteBuffer(bytes: valid[..<cut])) }
        }
    }

    @Test("handshakes round-trip and malformed ones are refused with a reason")
    func handshake() throws {
        let handshake = Handshake(nodeID: "node-2", clusterID: "cluster-9", incarnation: 0xfeed_beef_0000_0001, peerIncarnation: 42,
                                  raftAddress: "[::1]:7001")
        #expect(try Handshake.decode(ByteBuffer(bytes: handshake.encoded())) == handshake)
        #expect(throws: TransportError("not a Keyper peer (bad magic)")) {
            try Handshake.decode(ByteBuffer(string: "GET / HTTP/1.1\r\n"))
        }
        var newer = handshake.encoded()
        newer[4] = 9
        #expect(throws: TransportError("peer speaks protocol version 9; this node speaks \(Handshake.version)")) {
            try Handshake.decode(ByteBuffer(bytes: newer))
        }
        #expect(throws: TransportError.self) { try Handshake.decode(ByteBuffer(bytes: handshake.encoded() + [0])) }
        #expect(throws: TransportError("truncated handshake")) { try Handshake.decode(ByteBuffer(bytes: handshake.encoded().dropLast(1))) }
        #expect(throws: TransportError.self) { try Handshake.decode(ByteBuffer(bytes: Handshake(nodeID: "").encoded())) }
    }
}
