import KeyperStorage
import NIOPosix

/// Point reads that would wait for the disk, run on threads of their own.
///
/// A value is read from the state machine's files with `pread`. When the page cache holds it
/// (the usual case: a few microseconds) the read runs where the request is handled; when it
/// does not, the read would block that thread, an event loop or one of the few threads of
/// Swift's cooperative pool, for a disk access, and with two cores two such reads in flight
/// stop everything. (At 10^6 keys with etcd's 18 GB beside Keyper on one machine, the page
/// cache squeezed, one round read 3,300/s, which this would explain; the pool has not been
/// measured under that pressure yet.) So a read first tries the caches without waiting
/// (``KVStore/getIfCached(_:)``) and only a miss goes to this pool, whose threads keep the
/// disk's queue full.
enum DiskReads {
    /// Enough threads for a disk's queue, not so many that they crowd two cores.
    static let threadCount = 16

    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: threadCount)
        pool.start()
        return pool
    }()

    static func get(_ key: [UInt8], from store: KVStore) async throws -> KVStore.VersionedRead {
        switch try store.getIfCached(key) {
        case .done(let read): return read
        case .wouldBlock: return try await pool.runIfActive { try store.getVersioned(key) }
        }
    }
}
