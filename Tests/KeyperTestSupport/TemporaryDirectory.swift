import Glibc
import KeyperStorage

/// A fresh directory under /tmp, removed (with everything in it) when `body` returns.
public func withTemporaryDirectory<T>(_ body: (String) throws -> T) throws -> T {
    let path = makeTemporaryDirectory()
    defer { removeTree(path) }
    return try body(path)
}

/// The async form of ``withTemporaryDirectory(_:)``.
public func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let path = makeTemporaryDirectory()
    defer { removeTree(path) }
    return try await body(path)
}

public func makeTemporaryDirectory() -> String {
    var template = Array("/tmp/keyper-test-XXXXXX".utf8CString)
    let path = template.withUnsafeMutableBufferPointer { buffer -> String in
        guard let result = mkdtemp(buffer.baseAddress!) else { fatalError("mkdtemp failed: errno \(errno)") }
        return String(cString: result)
    }
    return path
}

public func removeTree(_ path: String) {
    FileIO.removeTree(path)
}

public func writeFile(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0)
    _ = text.withCString { write(fd, $0, strlen($0)) }
    close(fd)
}
