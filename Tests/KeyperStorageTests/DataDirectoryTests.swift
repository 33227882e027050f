import Dispatch
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
            #expect(directory.statePath == path + "/state")
            let marker = try FileIO.readFile(path + "/KEYPER")
            #expect(String(decoding: marker, as: UTF8.self) == "keyper-data-dir format=2\n")
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

    @Test("a lock a child process still holds for a moment after the release (fork to exec) is waited for, briefly")
    func lockHeldForAMoment() throws {
        try withTemporaryDirectory { dir in
            _ = try DataDirectory(path: dir)  // creates the directory and its LOCK, then releases it
            // Another open file description holding the lock, as a forked child's copy does.
            let held = open(dir + "/LOCK", O_RDWR | O_CLOEXEC)
            #expect(flock(held, LOCK_EX | LOCK_NB) == 0)
            DispatchQueue(label: "releaser").async {
                usleep(30_000)
                close(held)
            }
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

@Suite("Data directory identity and incarnation")
struct DataDirectoryIdentityTests {
    @Test("a claimed directory gets a non-zero incarnation that survives reopening")
    func incarnationPersists() throws {
        try withTemporaryDirectory { dir in
            let first: NodeIdentity
            do { first = try DataDirectory(path: dir).claim(mode: .raft, nodeID: "n1") }
            #expect(first.incarnation != 0)
            let again = try DataDirectory(path: dir).claim(mode: .raft, nodeID: "n1")
            #expect(again.incarnation == first.incarnation)
            // A new directory for the same node id is another incarnation.
            let other = try DataDirectory(path: dir + "/other").claim(mode: .raft, nodeID: "n1")
            #expect(other.incarnation != first.incarnation)
        }
    }

    @Test("a format-1 standalone directory is upgraded in place and given an incarnation")
    func upgradesStandalone() throws {
        try withTemporaryDirectory { dir in
            writeFile(dir + "/KEYPER", "keyper-data-dir format=1\n")
            writeFile(dir + "/IDENTITY", "mode=standalone\nnode_id=n1\ncluster_id=\nadopted=false\n")
            let identity = try DataDirectory(path: dir).claim(mode: .standalone, nodeID: "n1")
            #expect(identity.incarnation != 0)
            #expect(String(decoding: try FileIO.readFile(dir + "/KEYPER"), as: UTF8.self) == "keyper-data-dir format=2\n")
            #expect(try DataDirectory(path: dir).identity()?.incarnation == identity.incarnation)
        }
    }

    @Test("a format-1 cluster directory is refused, saying why and what to do")
    func refusesFormatOneCluster() throws {
        try withTemporaryDirectory { dir in
            writeFile(dir + "/KEYPER", "keyper-data-dir format=1\n")
            writeFile(dir + "/IDENTITY", "mode=raft\nnode_id=n1\ncluster_id=abc\nadopted=false\n")
            #expect {
                _ = try DataDirectory(path: dir).claim(mode: .raft, nodeID: "n1")
            } throws: { error in
                "\(error)".contains("format 1") && "\(error)".contains("--join") && "\(error)".contains(dir)
            }
        }
    }

    @Test("a member's directory without its log or state is reported, naming what is missing")
    func missingMemberData() throws {
        try withTemporaryDirectory { dir in
            let directory = try DataDirectory(path: dir)
            var identity = try directory.claim(mode: .raft, nodeID: "n1")
            #expect(directory.missingMemberData(identity) == nil, "not a member of any cluster yet")
            identity.clusterID = "c1"
            #expect(directory.missingMemberData(identity)?.contains("wal/") == true)
            try FileIO.makeDirectories(directory.walPath)
            writeFile(directory.walPath + "/0000000000000001.wal", "segment")
            #expect(directory.missingMemberData(identity)?.contains("state/") == true)
            try FileIO.makeDirectories(directory.statePath)
            writeFile(directory.statePath + "/0000000000000001.seg", "segment")
            #expect(directory.missingMemberData(identity) == nil)
            unlink(directory.statePath + "/0000000000000001.seg")
            writeFile(directory.legacyDatabasePath, "an earlier build's database")
            #expect(directory.missingMemberData(identity) == nil)
        }
    }
}
