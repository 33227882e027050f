import KeyperTestSupport
import Testing
import KeyperWire

@Suite("CRC-32C")
struct CRC32CTests {
    @Test("Matches the standard check value for \"123456789\"")
    func checkValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }

    @Test("Matches the iSCSI test vectors of RFC 3720 §B.4")
    func rfc3720Vectors() {
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0..<32).reversed().map { UInt8($0) }) == 0x113F_DB5C)
    }

    @Test("Empty input has checksum 0")
    func empty() {
        #expect(CRC32C.checksum([]) == 0)
    }

    @Test("Slicing-by-8 agrees with the bytewise reference at every length and alignment")
    func slicingMatchesReference() {
        var rng = WireTestGenerator(seed: 42)
        let data = rng.bytes(300)
        for start in 0..<9 {
            for end in start...data.count {
                let slice = Array(data[start..<end])
                #expect(CRC32C.checksum(data, range: start..<end) == CRC32C.checksumBytewise(slice))
            }
        }
    }

    @Test("Checksums compose: crc(a + b) == crc(b, continuing: crc(a))")
    func continuation() {
        var rng = WireTestGenerator(seed: 7)
        let a = rng.bytes(123)
        let b = rng.bytes(77)
        #expect(CRC32C.checksum(b, continuing: CRC32C.checksum(a)) == CRC32C.checksum(a + b))
    }
}
