/// A point on a monotonic clock, in nanoseconds from an origin of the clock's choosing.
///
/// The replica never reads a clock itself: it is handed one (the system's in a server, a
/// simulated one in the simulator), and deadlines and durations are `Moment`s of that clock.
public struct Moment: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static let zero = Moment(nanoseconds: 0)

    public static func < (lhs: Moment, rhs: Moment) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    public static func + (moment: Moment, duration: Duration) -> Moment {
        Moment(nanoseconds: moment.nanoseconds + duration.nanoseconds)
    }

    public static func - (later: Moment, earlier: Moment) -> Duration {
        .nanoseconds(later.nanoseconds - earlier.nanoseconds)
    }

    public var description: String { "\(nanoseconds)ns" }
}

/// A monotonic clock. Values only grow; the origin is arbitrary.
public protocol MonotonicClock: Sendable {
    var now: Moment { get }
}

/// The process's monotonic clock (`ContinuousClock`), counted from when this value was made.
public struct SystemClock: MonotonicClock {
    private let origin = ContinuousClock.now

    public init() {}

    public var now: Moment { Moment(nanoseconds: (ContinuousClock.now - origin).nanoseconds) }
}

extension Duration {
    /// The duration in whole nanoseconds.
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    /// The duration in whole milliseconds, rounded to the nearest.
    public var roundedMilliseconds: Int64 { (nanoseconds + 500_000) / 1_000_000 }
}
