import KeyperBase
import KeyperRaft
import Synchronization
import Testing
@testable import KeyperReplica

/// Records which readers were answered, and how.
private final class Answers: Sendable {
    let log = Mutex<[String]>([])

    func reader(_ name: String, deadline: Int64 = 1_000) -> Waiter {
        Waiter(deadline: Moment(nanoseconds: deadline)) { [self] result in
            self.log.withLock { $0.append(name + (result.isSuccess ? "" : " failed")) }
        }
    }

    var all: [String] { log.withLock { $0 } }
}

extension Result {
    fileprivate var isSuccess: Bool { if case .success = self { true } else { false } }
}

private func answer(_ readers: [Waiter]) { for reader in readers { reader.succeed() } }

@Suite("The read barrier (ReadIndex rounds, one in flight)")
struct ReadBarrierTests {
    @Test("reads arriving while a round is out ride the next one; a confirmed round waits for the state machine")
    func oneRoundInFlight() {
        let answers = Answers()
        var barrier = ReadBarrier(firstRound: 7)
        barrier.add([answers.reader("a")])
        #expect(barrier.canStartRound)
        barrier.roundStarted()
        #expect(!barrier.canStartRound, "nothing waits")
        barrier.add([answers.reader("b")])
        #expect(!barrier.canStartRound, "round 7 is still in flight")
        // Confirmed at index 10, applied only through 9: a waits for the apply.
        answer(barrier.confirm(round: 7, at: LogIndex(10), applied: LogIndex(9)))
        #expect(answers.all.isEmpty)
        #expect(barrier.hasConfirmedReads && barrier.canStartRound && barrier.nextRound == 8)
        answer(barrier.applied(through: LogIndex(10)))
        #expect(answers.all == ["a"])
        barrier.roundStarted()
        answer(barrier.confirm(round: 8, at: LogIndex(10), applied: LogIndex(10)))
        #expect(answers.all == ["a", "b"])
    }

    @Test("an answer to another round (an earlier run's, a duplicate) releases nothing")
    func staleAnswersIgnored() {
        let answers = Answers()
        var barrier = ReadBarrier(firstRound: 100)
        barrier.add([answers.reader("a")])
        barrier.roundStarted()
        answer(barrier.confirm(round: 1, at: LogIndex(1), applied: LogIndex(50)))
        answer(barrier.confirm(round: 99, at: LogIndex(1), applied: LogIndex(50)))
        #expect(answers.all.isEmpty)
        answer(barrier.confirm(round: 100, at: LogIndex(1), applied: LogIndex(50)))
        answer(barrier.confirm(round: 100, at: LogIndex(1), applied: LogIndex(50)))
        #expect(answers.all == ["a"], "answered once")
    }

    @Test("a dropped round or a leader change sends its readers to the next round, ahead of later ones")
    func droppedAndLeaderChange() {
        let answers = Answers()
        var barrier = ReadBarrier(firstRound: 1)
        barrier.add([answers.reader("a")])
        barrier.roundStarted()
        barrier.add([answers.reader("b")])
        barrier.drop(round: 1)
        #expect(barrier.waiting.count == 2 && barrier.inFlight == nil)
        barrier.roundStarted()
        barrier.leaderChanged()
        barrier.roundStarted()
        answer(barrier.confirm(round: 3, at: LogIndex(1), applied: LogIndex(1)))
        #expect(answers.all == ["a", "b"])
    }

    @Test("a round unanswered for longer than the limit is asked again under the same number")
    func retry() {
        var barrier = ReadBarrier(firstRound: 5)
        #expect(barrier.tick(ticksMax: 2) == nil, "no round in flight")
        barrier.add([Answers().reader("a")])
        barrier.roundStarted()
        #expect(barrier.tick(ticksMax: 2) == nil)
        #expect(barrier.tick(ticksMax: 2) == nil)
        #expect(barrier.tick(ticksMax: 2) == 5)
        #expect(barrier.tick(ticksMax: 2) == nil, "asked again: the age starts over")
    }

    @Test("expiry fails late readers wherever they are; an emptied round stays in flight for its answer")
    func expiry() {
        let answers = Answers()
        var barrier = ReadBarrier(firstRound: 1)
        barrier.add([answers.reader("early", deadline: 10), answers.reader("late", deadline: 100)])
        barrier.roundStarted()
        answer(barrier.confirm(round: 1, at: LogIndex(5), applied: LogIndex(1)))
        barrier.add([answers.reader("in round", deadline: 10)])
        barrier.roundStarted()
        barrier.add([answers.reader("waiting", deadline: 10)])
        for reader in barrier.expire(now: Moment(nanoseconds: 10)) { reader.fail(ReplicaError(.timeout, "")) }
        #expect(Set(answers.all) == ["early failed", "in round failed", "waiting failed"])
        #expect(barrier.inFlight?.number == 2 && barrier.inFlight?.readers.isEmpty == true && !barrier.canStartRound)
        answer(barrier.applied(through: LogIndex(5)))
        #expect(answers.all.last == "late")
    }

    @Test("closing takes every reader: waiting, in flight and confirmed")
    func takeAll() {
        let answers = Answers()
        var barrier = ReadBarrier(firstRound: 1)
        barrier.add([answers.reader("confirmed")])
        barrier.roundStarted()
        _ = barrier.confirm(round: 1, at: LogIndex(9), applied: LogIndex(1))
        barrier.add([answers.reader("in flight")])
        barrier.roundStarted()
        barrier.add([answers.reader("waiting")])
        #expect(barrier.takeAll().count == 3)
        #expect(barrier.takeAll().isEmpty && !barrier.hasConfirmedReads && barrier.inFlight == nil)
    }
}
