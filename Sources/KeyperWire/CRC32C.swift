/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI, ext4 metadata
/// and most modern logs. Chosen over CRC-32 (IEEE) for its better error detection on the
/// record lengths a log writes; hand-written because no package on the mirror offers it.
///
/// Slicing-by-8: eight 256-entry tables let the loop consume 8 bytes per iteration with
/// independent table lookups (roughly 5-8x faster than the byte-at-a-time loop).
///
/// The convention is the usual one: the register starts at `~initial` and the result is
/// inverted, so `checksum(b, continuing: checksum(a)) == checksum(a + b)`.
public enum CRC32C {
    /// The reflected Castagnoli polynomial.
    public static let polynomial: UInt32 = 0x82F6_3B78

    /// 8 tables of 256 entries, flattened: `tables[k * 256 + b]`.
    /// Table 0 is the classic byte table; table k advances a byte through k further zero bytes.
    static let tables: [UInt32] = {
        var tables = [UInt32](repeating: 0, count: 8 * 256)
        for byte in 0..<256 {
            var crc = UInt32(byte)
            for _ in 0..<8 {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ polynomial : crc >> 1
            }
            tables[byte] = crc
        }
        for slice in 1..<8 {
            for byte in 0..<256 {
                let previous = tables[(slice - 1) * 256 + byte]
                tables[slice * 256 + byte] = (previous >> 8) ^ tables[Int(previous & 0xFF)]
            }
        }
        return tables
    }()

    /// CRC-32C of `bytes`, continuing from the checksum `continuing` of the bytes before them.
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing: UInt32 = 0) -> UInt32 {
        tables.withUnsafeBufferPointer { table in
            var crc = ~continuing
            var position = 0
            let count = bytes.count
            // 8 bytes at a time: fold the first 4 into the register, then look all 8 up at once.
            while count - position >= 8 {
                let low = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self)) ^ crc
                let high = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: position + 4, as: UInt32.self))
                crc = table[7 * 256 + Int(low & 0xFF)]
                    ^ table[6 * 256 + Int((low >> 8) & 0xFF)]
                    ^ table[5 * 256 + Int((low >> 16) & 0xFF)]
                    ^ table[4 * 256 + Int(low >> 24)]
                    ^ table[3 * 256 + Int(high & 0xFF)]
                    ^ table[2 * 256 + Int((high >> 8) & 0xFF)]
                    ^ table[1 * 256 + Int((high >> 16) & 0xFF)]
                    ^ table[Int(high >> 24)]
                position += 8
            }
            while position < count {
                crc = (crc >> 8) ^ table[Int((crc ^ UInt32(bytes[position])) & 0xFF)]
                position += 1
            }
            return ~crc
        }
    }

    /// CRC-32C of a byte array (or any contiguous byte collection).
    public static func checksum(_ bytes: [UInt8], continuing: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, continuing: continuing) }
    }

    /// CRC-32C of `bytes[range]`, without copying.
    public static func checksum(_ bytes: [UInt8], range: Range<Int>, continuing: UInt32 = 0) -> UInt32 {
        precondition(range.lowerBound >= 0 && range.upperBound <= bytes.count, "range=\(range) count=\(bytes.count)")
        return bytes.withUnsafeBytes { buffer in
            checksum(UnsafeRawBufferPointer(rebasing: buffer[range]), continuing: continuing)
        }
    }

    /// The byte-at-a-time reference implementation; tests compare the fast path against it.
    public static func checksumBytewise(_ bytes: [UInt8], continuing: UInt32 = 0) -> UInt32 {
        var crc = ~continuing
        for byte in bytes {
            crc = (crc >> 8) ^ tables[Int((crc ^ UInt32(byte)) & 0xFF)]
        }
        return ~crc
    }
}
