/// A log-linear latency histogram in the manner of HdrHistogram: exact below 256 ns, and above
/// that 128 buckets per power of two, so every recorded value is known to within 1/128 (0.8%).
/// Recording is an index computation and an increment; histograms of many connections merge.
public struct LatencyHistogram: Sendable, Equatable {
    static let exactLimit: UInt64 = 256
    static let subBuckets = 128
    /// Values up to 2^48 ns (about 78 hours); larger ones are clamped into the last bucket.
    static let bucketCount = Int(exactLimit) + (48 - 8 + 1) * subBuckets

    private var counts = [UInt64](repeating: 0, count: bucketCount)
    public private(set) var count: UInt64 = 0
    public private(set) var min: UInt64 = .max
    public private(set) var max: UInt64 = 0
    private var sum: Double = 0

    public init() {}

    public mutating func record(nanoseconds value: UInt64) {
        counts[Self.index(of: value)] += 1
        count += 1
        sum += Double(value)
        if value < min { min = value }
        if value > max { max = value }
    }

    public mutating func merge(_ other: LatencyHistogram) {
        guard other.count > 0 else { return }
        for index in counts.indices where other.counts[index] != 0 { counts[index] += other.counts[index] }
        count += other.count
        sum += other.sum
        min = Swift.min(min, other.min)
        max = Swift.max(max, other.max)
    }

    public var mean: Double { count == 0 ? 0 : sum / Double(count) }

    /// The smallest recorded-bucket value v such that at least `percentile`% of the values are ≤ v
    /// (reported as the bucket's upper bound, never above the largest value recorded).
    public func value(atPercentile percentile: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        let rank = Swift.max(1, UInt64((percentile / 100 * Double(count)).rounded(.up)))
        var seen: UInt64 = 0
        for (index, bucketCount) in counts.enumerated() where bucketCount != 0 {
            seen += bucketCount
            if seen >= rank { return Swift.min(Self.upperBound(of: index), max) }
        }
        return max
    }

    static func index(of value: UInt64) -> Int {
        if value < exactLimit { return Int(value) }
        let highestBit = 63 - value.leadingZeroBitCount          // ≥ 8
        guard highestBit <= 48 else { return bucketCount - 1 }
        let shift = highestBit - 7                                  // keep the top 8 bits
        let top = Int(value >> UInt64(shift))                       // 128...255
        return Int(exactLimit) + (shift - 1) * subBuckets + (top - subBuckets)
    }

    /// The largest value that lands in bucket `index`.
    static func upperBound(of index: Int) -> UInt64 {
        if index < Int(exactLimit) { return UInt64(index) }
        let offset = index - Int(exactLimit)
        let shift = offset / subBuckets + 1
        let top = UInt64(offset % subBuckets + subBuckets)
        return ((top + 1) << UInt64(shift)) - 1
    }
}
