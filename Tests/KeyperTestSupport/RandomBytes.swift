extension RandomNumberGenerator {
    /// `count` random bytes from this generator (seeded ones replay them exactly).
    public mutating func bytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &self) }
    }
}
