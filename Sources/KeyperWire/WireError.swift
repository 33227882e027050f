/// Why a byte string did not decode. Decoding is strict and total: every input either decodes
/// to exactly the value that encodes back to it, or throws one of these. Nothing traps.
public enum WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The input ended at `offset` while `needed` more bytes were expected.
    case truncated(offset: Int, needed: Int)
    /// A LEB128 varint at `offset` is longer than 10 bytes, overflows 64 bits, or is not minimal.
    case malformedVarint(offset: Int)
    /// A field at `offset` holds a value outside its domain (an unknown enum tag, a flag that is
    /// not 0 or 1, a set that is not strictly sorted, a count beyond a limit).
    case invalidValue(field: String, offset: Int)
    /// A string at `offset` is not valid UTF-8.
    case invalidUTF8(offset: Int)
    /// The value ended at `offset` but `count` bytes were left over.
    case trailingBytes(offset: Int, count: Int)

    public var description: String {
        switch self {
        case .truncated(let offset, let needed): "truncated at byte \(offset): \(needed) more byte(s) needed"
        case .malformedVarint(let offset): "malformed varint at byte \(offset)"
        case .invalidValue(let field, let offset): "invalid \(field) at byte \(offset)"
        case .invalidUTF8(let offset): "invalid UTF-8 string at byte \(offset)"
        case .trailingBytes(let offset, let count): "\(count) trailing byte(s) at byte \(offset)"
        }
    }
}
