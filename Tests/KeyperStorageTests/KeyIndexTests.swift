import KeyperBase
import Testing
@testable import KeyperStorage

@Suite("The packed ordered key index")
struct KeyIndexTests {
    @Test("gets, sets, removes and listings agree with a model over random operations, through splits and merges")
    func againstModel() {
        for seed: UInt64 in 1...4 {
            var random = SplitMix64(seed: seed)
            var index = KeyIndex<UInt64>()
            var model: [[UInt8]: UInt64] = [:]
            // Few distinct short keys, so sets, overwrites and removes all hit; thousands of
            // entries, so leaves split and merge many times.
            func randomKey() -> [UInt8] {
                let length = Int(random.next(below: 4))
                return [UInt8(ascii: "k")] + (0..<length).map { _ in UInt8(random.next(below: 20)) }
            }
            for step in 0..<20_000 {
                let key = randomKey()
                switch random.next(below: 10) {
                case 0..<6:
                    let value = random.next()
                    #expect(index.set(key, value) == model.updateValue(value, forKey: key), "seed \(seed) step \(step)")
                case 6..<9:
                    #expect(index.remove(key) == model.removeValue(forKey: key), "seed \(seed) step \(step)")
                default:
                    #expect(index.get(key) == model[key], "seed \(seed) step \(step)")
                }
                #expect(index.count == model.count)
            }
            let sorted = model.keys.sorted { KeyIndex<UInt64>.compare($0, $1) < 0 }
            var walked: [[UInt8]] = []
            index.forEach { key, value in
                #expect(model[key] == value)
                walked.append(key)
                return true
            }
            #expect(walked == sorted, "seed \(seed): an in-order walk gives every key once, sorted")
            // Listing by prefix, page by page, gives the model's keys with that prefix.
            for prefix in [[UInt8(ascii: "k")], [UInt8(ascii: "k"), 3], [UInt8(ascii: "k"), 19, 0], [UInt8(ascii: "z")]] {
                var listed: [[UInt8]] = []
                var after: [UInt8]?
                while true {
                    let page = index.keys(prefix: prefix, after: after, limit: 7)
                    listed += page.keys
                    guard page.more, let last = page.keys.last else { break }
                    after = last
                }
                #expect(listed == sorted.filter { $0.starts(with: prefix) }, "seed \(seed) prefix \(prefix)")
            }
        }
    }

    @Test("a million keys cost their bytes plus about 16 bytes each, not a heap object each")
    func memoryPerKey() {
        var index = KeyIndex<UInt64>()
        var keyBytes = 0
        for i in 0..<1_000_000 {
            let key = Array("bench/\(i)".utf8)
            keyBytes += key.count
            index.set(key, UInt64(i))
        }
        #expect(index.count == 1_000_000)
        #expect(index.get(Array("bench/765432".utf8)) == 765_432)
        // Key bytes, 4 bytes of offset and 8 of value per key, and the leaves' spare room
        // (measured: 16.1 bytes per key beyond the keys).
        let perKey = Double(index.bytesHeld - keyBytes) / 1_000_000
        #expect(perKey < 24, "\(perKey) bytes per key beyond the keys themselves")
    }
}
