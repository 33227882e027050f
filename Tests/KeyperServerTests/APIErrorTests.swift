import KeyperReplica
import Testing
@testable import KeyperServer

@Suite("Replica failures as HTTP errors")
struct APIErrorTests {
    @Test("Every failure kind becomes an error status with a code and says whether the request may still apply")
    func everyKind() {
        for kind in ReplicaError.Kind.allCases {
            let error = APIError(ReplicaError(kind, "because"))
            #expect(error.status.code >= 400, "\(kind)")
            #expect(!error.code.isEmpty, "\(kind)")
            #expect(error.outcome == (kind.usualOutcome == .unknown ? "unknown" : "not_applied"), "\(kind)")
        }
    }

    @Test("The JSON body carries the outcome the replica gave, not the kind's usual one")
    func outcomeInBody() {
        let expired = APIError(ReplicaError(.noLeader, "no leader; the write was not applied", outcome: .notApplied))
        #expect(expired.body == #"{"error":"no leader; the write was not applied","code":"no_leader","outcome":"not_applied"}"# + "\n")
        let proposed = APIError(ReplicaError(.noLeader, "may or may not", outcome: .unknown))
        #expect(proposed.body.contains(#""outcome":"unknown""#))
        #expect(APIError.keyNotFound().body == #"{"error":"key not found","code":"key_not_found"}"# + "\n")
    }
}
