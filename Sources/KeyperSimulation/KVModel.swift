import KeyperRaft

/// The simulated application: a string key-value store fed by the Raft log.
public enum KVCommand: Hashable, Sendable {
    case put(key: String, value: String)
    case delete(key: String)

    /// Layout: tag u8 (1 put, 2 delete), key length u8, key, value (rest).
    public func encoded() -> [UInt8] {
        switch self {
        case .put(let key, let value):
            let keyBytes = Array(key.utf8)
            precondition(keyBytes.count <= 255, "key too long")
            return [1, UInt8(keyBytes.count)] + keyBytes + Array(value.utf8)
        case .delete(let key):
            let keyBytes = Array(key.utf8)
            precondition(keyBytes.count <= 255, "key too long")
            return [2, UInt8(keyBytes.count)] + keyBytes
        }
    }

    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= 2, bytes.count >= 2 + Int(bytes[1]) else { return nil }
        let keyEnd = 2 + Int(bytes[1])
        let key = String(decoding: bytes[2..<keyEnd], as: UTF8.self)
        switch bytes[0] {
        case 1: self = .put(key: key, value: String(decoding: bytes[keyEnd...], as: UTF8.self))
        case 2 where keyEnd == bytes.count: self = .delete(key: key)
        default: return nil
        }
    }
}

/// Deterministic serialisation of the store for snapshots: sorted keys, length-prefixed.
enum KVSnapshot {
    static func encode(_ store: [String: String]) -> [UInt8] {
        var out: [UInt8] = []
        for key in store.keys.sorted() {
            appendField(Array(key.utf8), to: &out)
            appendField(Array(store[key]!.utf8), to: &out)
        }
        return out
    }

    static func decode(_ bytes: [UInt8]) -> [String: String] {
        var store: [String: String] = [:]
        var offset = 0
        func field() -> String {
            let length = Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
            defer { offset += 2 + length }
            return String(decoding: bytes[(offset + 2)..<(offset + 2 + length)], as: UTF8.self)
        }
        while offset < bytes.count {
            let key = field()
            store[key] = field()
        }
        return store
    }

    private static func appendField(_ field: [UInt8], to out: inout [UInt8]) {
        precondition(field.count <= Int(UInt16.max), "field too long")
        out.append(UInt8(field.count >> 8))
        out.append(UInt8(field.count & 0xFF))
        out.append(contentsOf: field)
    }
}
