import Glibc
import KeyperTestSupport
import Testing
@testable import KeyperStorage

@Suite("Data directory")
struct DataDirectoryTests {
    @Test("a missing directory is created with its parents and marked")
    func createsDirectory() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/a/b/data"
            let directory = try DataDirectory(path: path)
            #expect(directory.databasePath == path + "/state.db")
            let marker = try FileIO.readFile(path + "/KEYPER")
            #expect(String(decoding: marker, as: UTF8.self) == "keyper-data-dir format=1\n")
        }
    }

    @Test("a directory holding someone else's files is refused, naming what it found")
    func foreignDirectoryRefused() throws {
        try withTemporaryDirectory { dir in
            writeFile(dir + "/MANIFEST", "badger")
            writeFile(dir + "/000001.vlog", "")
            #expect {
                _ = try DataDirectory(path: dir)
            } throws: { error in
                let text = "\(error)"
                return text.contains("not a Keyper data directory") && text.contains("000001.vlog") && text.contains(dir)
            }
        }
    }

    @Test("a directory written by a newer format is refused")
    func newerFormatRefused() throws {
        try withTemporaryDirectory { dir in
            writeFile(dir + "/KEYPER", "keyper-data-dir format=7\n")
            #expect {
                _ = try DataDirectory(path: dir)
            } throws: { error in
                "\(error)".contains("newer Keyper (data format 7")
            }
        }
    }

    @Test("a garbled marker is refused")
    func garbledMarkerRefused() throws {
        try withTemporaryDirectory { dir in
            writeFile(dir + "/KEYPER", "hello")
            #expect(throws: DataDirectoryError.self) { _ = try DataDirectory(path: dir) }
        }
    }

    @Test("a path that is a file is refused")
    func fileRefused() throws {
        try withTemporaryDirectory { dir in
            writeFile(dir + "/plain", "x")
            #expect(throws: DataDirectoryError.self) { _ = try DataDirectory(path: dir + "/plain") }
        }
    }

    @Test("a directory in use by another opener is refused until it is released")
    func lockedDirectoryRefused() throws {
        try withTemporaryDirectory { dir in
            var first: DataDirectory? = try DataDirectory(path: dir)
            #expect {
                _ = try DataDirectory(path: dir)
            } throws: { error in
                "\(error)".contains("in use by another process")
            }
            _ = first
            first = nil
            _ = try DataDirectory(path: dir)
        }
    }

    @Test("a reopened Keyper directory is accepted")
    func reopen() throws {
        try withTemporaryDirectory { dir in
            do { _ = try DataDirectory(path: dir) }
            _ = try DataDirectory(path: dir)
        }
    }
}
