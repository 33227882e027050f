/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, well-mixed generator. The Raft core takes all
/// its randomness from one of these, seeded from `Config.randomSeed`, so a seed replays a run.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in `0..<bound`. The modulo bias is below 2^-40 for the bounds used here.
    public mutating func next(below bound: Int) -> Int {
        precondition(bound > 0, "bound=\(bound)")
        return Int(next() % UInt64(bound))
    }

    /// True with probability `numerator / denominator`.
    public mutating func chance(_ numerator: Int, in denominator: Int) -> Bool {
        next(below: denominator) < numerator
    }
}
