import Testing
import KeyperWire

@Suite("ByteWriter and ByteReader")
struct ByteIOTests {
    @Test("Fixed-width integers are little-endian and round-trip")
    func fixedWidth() throws {
        var writer = ByteWriter()
        writer.writeUInt8(0xAB)
        writer.writeUInt16(0x1234)
        writer.writeUInt32(0xDEAD_BEEF)
        writer.writeUInt64(0x0102_0304_0506_0708)
        #expect(writer.bytes == [0xAB, 0x34, 0x12, 0xEF, 0xBE, 0xAD, 0xDE, 8, 7, 6, 5, 4, 3, 2, 1])
        var reader = ByteReader(writer.bytes)
        #expect(try reader.readUInt8() == 0xAB)
        #expect(try reader.readUInt16() == 0x1234)
        #expect(try reader.readUInt32() == 0xDEAD_BEEF)
        #expect(try reader.readUInt64() == 0x0102_0304_0506_0708)
        try reader.expectEnd()
    }

    @Test("Varints round-trip at every size boundary and report their size")
    func varintBoundaries() throws {
        var values: [UInt64] = [0, 1, 127, 128, 255, 300, 16_383, 16_384, UInt64(UInt32.max), UInt64.max - 1, UInt64.max]
        for shift in 0..<64 { values.append(1 << UInt64(shift)); values.append((1 << UInt64(shift)) - 1) }
        for value in values {
            var writer = ByteWriter()
            writer.writeVarint(value)
            #expect(writer.count == ByteWriter.varintSize(value), "value=\(value)")
            var reader = ByteReader(writer.bytes)
            #expect(try reader.readVarint() == value)
            try reader.expectEnd()
        }
    }

    @Test("Non-minimal, overlong and overflowing varints are rejected")
    func malformedVarints() {
        let bad: [[UInt8]] = [
            [0x80, 0x00],  // 0 written in two bytes
            [0xFF, 0x00],  // 127 with a trailing zero group
            [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],  // 11 bytes
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02],  // 2^64 and more
        ]
        for bytes in bad {
            var reader = ByteReader(bytes)
            #expect(throws: WireError.self, "bytes=\(bytes)") { _ = try reader.readVarint() }
        }
    }

    @Test("Reading past the end throws truncated with the offset")
    func truncation() {
        var reader = ByteReader([1, 2, 3])
        #expect(throws: WireError.truncated(offset: 0, needed: 1)) { _ = try reader.readUInt32() }
        var varint = ByteReader([0x80])
        #expect(throws: WireError.truncated(offset: 1, needed: 1)) { _ = try varint.readVarint() }
    }

    @Test("A length prefix larger than the input throws before allocating")
    func hugeLength() {
        var writer = ByteWriter()
        writer.writeVarint(UInt64.max)
        var reader = ByteReader(writer.bytes)
        #expect(throws: WireError.self) { _ = try reader.readLengthPrefixed() }
    }

    @Test("Strings round-trip and invalid UTF-8 is rejected")
    func strings() throws {
        var writer = ByteWriter()
        writer.writeString("node-é-1")
        var reader = ByteReader(writer.bytes)
        #expect(try reader.readString() == "node-é-1")
        var invalid = ByteReader([2, 0xC3, 0x28])
        #expect(throws: WireError.invalidUTF8(offset: 0)) { _ = try invalid.readString() }
    }

    @Test("Booleans accept only 0 and 1")
    func strictBool() throws {
        var reader = ByteReader([0, 1, 2])
        #expect(try reader.readBool() == false)
        #expect(try reader.readBool() == true)
        #expect(throws: WireError.self) { _ = try reader.readBool() }
    }

    @Test("A reader over a sub-range stops at its end")
    func subrange() throws {
        var reader = ByteReader([9, 1, 2, 9], range: 1..<3)
        #expect(try reader.readUInt8() == 1)
        #expect(try reader.readUInt8() == 2)
        #expect(throws: WireError.self) { _ = try reader.readUInt8() }
    }

    @Test("patchUInt32 overwrites in place")
    func patch() {
        var writer = ByteWriter()
        writer.writeUInt32(0)
        writer.writeUInt8(7)
        writer.patchUInt32(0x0A0B_0C0D, at: 0)
        #expect(writer.bytes == [0x0D, 0x0C, 0x0B, 0x0A, 7])
    }
}
