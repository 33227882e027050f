import Testing
@testable import KeyperServer

@Suite("JSON parser for request bodies")
struct JSONValueTests {
    private func parse(_ text: String) throws -> JSONValue { try JSONValue.parse(Array(text.utf8)) }

    @Test("values of every kind, in order, with escapes and surrogate pairs")
    func values() throws {
        #expect(try parse(#" {"a": [1, -2.5e3, true, false, null], "b": {"c": "x"}} "#) == .object([
            ("a", .array([.number("1"), .number("-2.5e3"), .bool(true), .bool(false), .null])),
            ("b", .object([("c", .string(Array("x".utf8)))])),
        ]))
        #expect(try parse(#""q\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#) == .string(Array("q\"\\/\u{8}\u{c}\n\r\té😀".utf8)))
        #expect(try parse("\"caf\u{e9} \u{1F600}\"") == .string(Array("café 😀".utf8)))
        #expect(try parse("[]") == .array([]) && parse("{}") == .object([]))
    }

    @Test("malformed documents are refused with the offset of the problem")
    func malformed() {
        let bad = ["", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "01", "1.", "-", "1e", "tru", "\"abc", "\"\\x\"", "\"\\u12\"",
                   "\"\\ud800\"", "\"\\udc00\"", "\"a\u{1}\"", "[1] 2", "{a:1}", String(repeating: "[", count: 40) + String(repeating: "]", count: 40)]
        for text in bad {
            #expect(throws: JSONParseError.self, "\(text)") { try JSONValue.parse(Array(text.utf8)) }
        }
        #expect(throws: JSONParseError.self) { try JSONValue.parse([0x22, 0xFF, 0x22]) }  // not UTF-8
        do {
            _ = try JSONValue.parse(Array(#"{"a": tx}"#.utf8))
        } catch {
            #expect(error.offset == 6)
        }
    }
}
