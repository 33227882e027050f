/// A min-heap of events by (time, sequence): events at the same time run in the order they
/// were scheduled, so a run depends only on its seed.
struct EventQueue<Event> {
    private struct Item {
        var time: Int64
        var sequence: UInt64
        var event: Event

        func precedes(_ other: Item) -> Bool {
            time != other.time ? time < other.time : sequence < other.sequence
        }
    }

    private var items: [Item] = []
    private var nextSequence: UInt64 = 0

    var isEmpty: Bool { items.isEmpty }
    var nextTime: Int64? { items.first?.time }

    mutating func push(_ event: Event, at time: Int64) {
        items.append(Item(time: time, sequence: nextSequence, event: event))
        nextSequence += 1
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].precedes(items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (time: Int64, event: Event)? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var first = parent
            if left < items.count && items[left].precedes(items[first]) { first = left }
            if right < items.count && items[right].precedes(items[first]) { first = right }
            guard first != parent else { break }
            items.swapAt(parent, first)
            parent = first
        }
        return (top.time, top.event)
    }
}
