/// A parsed JSON document (RFC 8259), for request bodies on a hot path: Foundation's
/// `JSONDecoder` with `Decodable` types was a fifth of a leader's CPU under a transaction load.
/// Objects keep their members in order; strings are their UTF-8 bytes (checked valid), so a
/// key or value is not copied into a `String` and out again; numbers keep their text, for the
/// caller to read as the kind of number it expects.
package enum JSONValue: Equatable {
    case object([(key: String, value: JSONValue)])
    case array([JSONValue])
    case string([UInt8])
    case number(String)
    case bool(Bool)
    case null

    package static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case let (.object(a), .object(b)): a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case let (.array(a), .array(b)): a == b
        case let (.string(a), .string(b)): a == b
        case let (.number(a), .number(b)): a == b
        case let (.bool(a), .bool(b)): a == b
        case (.null, .null): true
        default: false
        }
    }

    /// What kind of value it is, for error messages.
    package var kind: String {
        switch self {
        case .object: "an object"
        case .array: "an array"
        case .string: "a string"
        case .number: "a number"
        case .bool: "a Boolean"
        case .null: "null"
        }
    }

    /// Parses a whole document; throws with the byte offset of the first problem.
    package static func parse(_ bytes: [UInt8], depthMax: Int = 32) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes: bytes, depthMax: depthMax)
        parser.skipSpace()
        let value = try parser.value(depth: 0)
        parser.skipSpace()
        guard parser.position == bytes.count else { throw parser.error("unexpected text after the JSON value") }
        return value
    }
}

package struct JSONParseError: Error, CustomStringConvertible {
    var offset: Int
    var message: String
    package var description: String { "invalid JSON at byte \(offset): \(message)" }
}

private struct JSONParser {
    let bytes: [UInt8]
    let depthMax: Int
    var position = 0

    init(bytes: [UInt8], depthMax: Int) {
        self.bytes = bytes
        self.depthMax = depthMax
    }

    func error(_ message: String) -> JSONParseError { JSONParseError(offset: position, message: message) }

    var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    mutating func skipSpace() {
        while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { position += 1 }
    }

    mutating func expect(_ literal: StaticString) throws(JSONParseError) {
        let count = literal.utf8CodeUnitCount
        let matches = literal.withUTF8Buffer { text in
            position + count <= bytes.count && (0..<count).allSatisfy { bytes[position + $0] == text[$0] }
        }
        guard matches else { throw error("expected \(literal)") }
        position += count
    }

    mutating func value(depth: Int) throws(JSONParseError) -> JSONValue {
        guard depth < depthMax else { throw error("nested deeper than \(depthMax) levels") }
        switch current {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        // (Member names are made `String`s: there are few, and they are compared with literals.)
        case UInt8(ascii: "t"):
            try expect("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expect("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expect("null")
            return .null
        case let byte? where byte == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte):
            return .number(try number())
        case nil: throw error("the document ends where a value should be")
        default: throw error("unexpected character where a value should be")
        }
    }

    mutating func object(depth: Int) throws(JSONParseError) -> JSONValue {
        position += 1
        var members: [(key: String, value: JSONValue)] = []
        skipSpace()
        if current == UInt8(ascii: "}") {
            position += 1
            return .object(members)
        }
        while true {
            skipSpace()
            guard current == UInt8(ascii: "\"") else { throw error("expected a member name in quotes") }
            let key = String(decoding: try string(), as: UTF8.self)
            skipSpace()
            guard current == UInt8(ascii: ":") else { throw error("expected ':' after a member name") }
            position += 1
            skipSpace()
            members.append((key, try value(depth: depth + 1)))
            skipSpace()
            switch current {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "}"):
                position += 1
                return .object(members)
            default: throw error("expected ',' or '}' in an object")
            }
        }
    }

    mutating func array(depth: Int) throws(JSONParseError) -> JSONValue {
        position += 1
        var elements: [JSONValue] = []
        skipSpace()
        if current == UInt8(ascii: "]") {
            position += 1
            return .array(elements)
        }
        while true {
            skipSpace()
            elements.append(try value(depth: depth + 1))
            skipSpace()
            switch current {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "]"):
                position += 1
                return .array(elements)
            default: throw error("expected ',' or ']' in an array")
            }
        }
    }

    /// The number's text, checked against the grammar.
    mutating func number() throws(JSONParseError) -> String {
        let start = position
        func digits(_ parser: inout JSONParser) -> Int {
            let from = parser.position
            while let byte = parser.current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { parser.position += 1 }
            return parser.position - from
        }
        if current == UInt8(ascii: "-") { position += 1 }
        if current == UInt8(ascii: "0") {
            position += 1
        } else if digits(&self) == 0 {
            throw error("a number needs digits")
        }
        if current == UInt8(ascii: ".") {
            position += 1
            guard digits(&self) > 0 else { throw error("a fraction needs digits") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            position += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard digits(&self) > 0 else { throw error("an exponent needs digits") }
        }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    /// A string's UTF-8 bytes, unescaped and checked valid.
    mutating func string() throws(JSONParseError) -> [UInt8] {
        position += 1
        let start = position
        // The common case: no escapes, one copy.
        while let byte = current, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\") {
            guard byte >= 0x20 else { throw error("a control character inside a string") }
            position += 1
        }
        guard let stop = current else { throw error("a string without its closing quote") }
        var scalars = Array(bytes[start..<position])
        if stop == UInt8(ascii: "\"") {
            position += 1
            return try text(scalars, from: start)
        }
        while true {
            guard let byte = current else { throw error("a string without its closing quote") }
            position += 1
            switch byte {
            case UInt8(ascii: "\""):
                return try text(scalars, from: start)
            case UInt8(ascii: "\\"):
                guard let escaped = current else { throw error("a string without its closing quote") }
                position += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalars.append(escaped)
                case UInt8(ascii: "b"): scalars.append(0x08)
                case UInt8(ascii: "f"): scalars.append(0x0C)
                case UInt8(ascii: "n"): scalars.append(0x0A)
                case UInt8(ascii: "r"): scalars.append(0x0D)
                case UInt8(ascii: "t"): scalars.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code) {
                        guard current == UInt8(ascii: "\\"), position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "u") else {
                            throw error("a lone high surrogate in \\u escapes")
                        }
                        position += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw error("a high surrogate without its low surrogate") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(code) {
                        throw error("a lone low surrogate in \\u escapes")
                    }
                    scalars.append(contentsOf: Array(String(Character(Unicode.Scalar(code)!)).utf8))
                default:
                    throw error("an unknown escape \\\(Character(Unicode.Scalar(escaped)))")
                }
            default:
                guard byte >= 0x20 else { throw error("a control character inside a string") }
                scalars.append(byte)
            }
        }
    }

    mutating func hex4() throws(JSONParseError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw error("a \\u escape needs four hex digits") }
        var code: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt8 = switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: throw error("a \\u escape needs four hex digits")
            }
            code = code << 4 | UInt32(digit)
            position += 1
        }
        return code
    }

    func text(_ utf8: [UInt8], from start: Int) throws(JSONParseError) -> [UInt8] {
        // Pure ASCII (the common case) is valid as it is.
        guard utf8.allSatisfy({ $0 < 0x80 }) || String(validating: utf8, as: UTF8.self) != nil else {
            throw JSONParseError(offset: start, message: "a string that is not valid UTF-8")
        }
        return utf8
    }
}
