/// Reading one field of a flat JSON body without decoding it (what command-line tools and
/// checks need of an answer).
public protocol FlatJSONBody {
    var body: [UInt8] { get }
}

extension FlatJSONBody {
    /// The `code` of a JSON error body, if it has one.
    public var errorCode: String? { jsonString("code") }

    /// The string after `"name":` in a flat JSON body.
    public func jsonString(_ name: String) -> String? {
        after(#""\#(name)":""#).map { String(decoding: $0.prefix { $0 != UInt8(ascii: "\"") }, as: UTF8.self) }
    }

    /// The number after `"name":` in a flat JSON body.
    public func jsonNumber(_ name: String) -> UInt64? {
        after(#""\#(name)":"#).flatMap { UInt64(String(decoding: $0.prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }, as: UTF8.self)) }
    }

    /// The body after the first occurrence of `needle`.
    private func after(_ needle: String) -> ArraySlice<UInt8>? {
        let pattern = Array(needle.utf8)
        guard body.count >= pattern.count else { return nil }
        for start in 0...(body.count - pattern.count) where body[start..<(start + pattern.count)].elementsEqual(pattern) {
            return body[(start + pattern.count)...]
        }
        return nil
    }
}

extension HTTPResult: FlatJSONBody {}
extension KeyperClient.Answer: FlatJSONBody {
    /// The first value of the header `name`.
    public func header(_ name: String) -> String? { headers.first(name: name) }
}
