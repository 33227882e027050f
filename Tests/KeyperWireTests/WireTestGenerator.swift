import KeyperBase
import KeyperRaft

/// The core's SplitMix64: a failing random test replays from its seed.
typealias WireTestGenerator = SplitMix64
