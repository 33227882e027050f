import KeyperTestSupport
import Testing
import KeyperRaft
import KeyperWire

/// Decoding must be total: any byte string decodes or throws, never traps. Because every
/// encoding is canonical, anything that does decode must re-encode to the same bytes.
@Suite("Decoder fuzzing")
struct FuzzTests {
    static let seed: UInt64 = 0x5EED_0001

    func checkTotal<T: WireCodable & Equatable>(_ type: T.Type, _ bytes: [UInt8], seed: UInt64) {
        if let value = try? T(wireBytes: bytes) {
            #expect(value.wireBytes() == bytes, "\(T.self) decoded non-canonical input seed=\(seed) bytes=\(bytes)")
        }
    }

    @Test("Random bytes decode canonically or throw, for every type")
    func randomBytes() {
        var rng = WireTestGenerator(seed: Self.seed)
        for _ in 0..<20_000 {
            let bytes = rng.bytes(Int.random(in: 0...24, using: &rng))
            checkTotal(Entry.self, bytes, seed: Self.seed)
            checkTotal(HardState.self, bytes, seed: Self.seed)
            checkTotal(Configuration.self, bytes, seed: Self.seed)
            checkTotal(SnapshotMetadata.self, bytes, seed: Self.seed)
        }
    }

    @Test("Every proper prefix of a valid encoding throws")
    func truncations() {
        func check<T: WireCodable & Equatable>(_ values: [T]) {
            for value in values {
                let bytes = value.wireBytes()
                for length in 0..<bytes.count {
                    #expect(throws: WireError.self, "\(T.self) prefix \(length)/\(bytes.count)") {
                        try T(wireBytes: Array(bytes[0..<length]))
                    }
                }
            }
        }
        check(sampleEntries())
        check(sampleHardStates())
        check(sampleConfigurations())
        check(sampleSnapshots())
    }

    @Test("Valid encodings with one byte mutated decode canonically or throw")
    func mutations() {
        var rng = WireTestGenerator(seed: Self.seed + 1)
        let encodings = sampleEntries().map { $0.wireBytes() } + sampleHardStates().map { $0.wireBytes() }
            + sampleSnapshots().map { $0.wireBytes() }
        for _ in 0..<5_000 {
            var bytes = encodings.randomElement(using: &rng)!
            let position = Int.random(in: 0..<bytes.count, using: &rng)
            bytes[position] = UInt8.random(in: 0...255, using: &rng)
            checkTotal(Entry.self, bytes, seed: Self.seed + 1)
            checkTotal(HardState.self, bytes, seed: Self.seed + 1)
            checkTotal(SnapshotMetadata.self, bytes, seed: Self.seed + 1)
        }
    }
}
