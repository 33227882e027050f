import FoundationEssentials
import HTTPTypes
import Hummingbird
import KeyperClient
import NIOCore

/// The live status page (`GET /`) and the view of the cluster it reads every second
/// (`GET /v1/cluster`): one self-contained page, no script or style from elsewhere (a machine
/// may have no internet).
enum StatusPage {
    static func response() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// Every member as it answers for itself (asked at once, each within a second), with the
    /// leader's match index for it: `{"cluster_id", "leader", "members": [{"id", "http_addr",
    /// "raft_addr", "voter", "reachable", "role", "term", "commit_index", "applied_index",
    /// "match_index", "keys", "requests", "error"}]}`.
    static func cluster<Node: KeyValueNode>(node: Node) async throws -> Response {
        let own = try await node.statusWithRequests()
        guard let members = own.members, own.mode == "raft" else {
            return json(#"{"cluster_id":null,"leader":"# + JSONText.quoted(own.nodeID) + #","members":["# + member(own, id: own.nodeID,
                http: own.leaderHTTPAddress ?? "", raft: "", voter: true, match: nil, error: nil) + "]}")
        }
        let answers = await withTaskGroup(of: (String, NodeStatus?, String?).self) { group in
            for entry in members where entry.id != own.nodeID {
                group.addTask {
                    do {
                        let answer = try await HTTPRequester.send(.GET, "http://\(entry.httpAddress)/v1/status", timeout: .seconds(1))
                        return (entry.id, try JSONDecoder().decode(NodeStatus.self, from: Data(answer.body)), nil)
                    } catch {
                        return (entry.id, nil, "\(error)")
                    }
                }
            }
            var answers: [String: (NodeStatus?, String?)] = [:]
            for await (id, status, error) in group { answers[id] = (status, error) }
            return answers
        }
        // The leader knows how far each member's log reaches.
        let leaderStatus = own.isLeader ? own : answers.values.compactMap(\.0).first { $0.isLeader }
        let matches = Dictionary((leaderStatus?.members ?? []).compactMap { member in member.matchIndex.map { (member.id, $0) } },
                                 uniquingKeysWith: { $1 })
        let items = members.map { entry -> String in
            let status = entry.id == own.nodeID ? own : answers[entry.id]?.0
            return member(status, id: entry.id, http: entry.httpAddress, raft: entry.raftAddress, voter: entry.role == "voter",
                          match: matches[entry.id], error: status == nil ? answers[entry.id]?.1 ?? "no answer" : nil)
        }
        let leader = leaderStatus?.nodeID ?? own.leaderID
        return json(#"{"cluster_id":"# + JSONText.quoted(own.clusterID ?? "") + #","leader":"# + (leader.map(JSONText.quoted) ?? "null")
            + #","members":["# + items.joined(separator: ",") + "]}")
    }

    private static func member(_ status: NodeStatus?, id: String, http: String, raft: String, voter: Bool, match: UInt64?, error: String?) -> String {
        func number(_ value: UInt64?) -> String { value.map(String.init) ?? "null" }
        var text = #"{"id":"# + JSONText.quoted(id) + #","http_addr":"# + JSONText.quoted(http) + #","raft_addr":"# + JSONText.quoted(raft)
            + #","voter":\#(voter),"reachable":\#(status != nil),"match_index":\#(number(match))"#
        if let status {
            text += #","role":"# + JSONText.quoted(status.role ?? status.mode) + #","term":\#(number(status.term))"#
                + #","commit_index":\#(number(status.commitIndex)),"applied_index":\#(number(status.appliedIndex)),"keys":\#(status.keys)"#
                + #","uptime_seconds":\#(status.uptimeSeconds)"#
            if let requests = status.requests {
                text += #","requests":{"reads":\#(requests.reads),"writes":\#(requests.writes),"read_ns":\#(requests.readNanoseconds),"write_ns":\#(requests.writeNanoseconds)}"#
            }
        }
        if let error { text += #","error":"# + JSONText.quoted(error) }
        return text + "}"
    }

    private static func json(_ body: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body + "\n")))
    }

    /// The page: a table of members refreshed every second from `/v1/cluster`, with rates
    /// and mean latencies from the difference of two readings.
    static let html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Keyper</title>
        <style>
        body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1rem; color: #1b1f24; background: #f6f8fa; }
        h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
        #summary { color: #57606a; margin-bottom: .8rem; }
        .wrap { overflow-x: auto; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; }
        table { border-collapse: collapse; width: 100%; min-width: 640px; }
        th, td { padding: .45rem .6rem; text-align: right; border-bottom: 1px solid #eaeef2; white-space: nowrap; }
        th:first-child, td:first-child, td.text { text-align: left; }
        th { background: #f6f8fa; font-weight: 600; font-size: .85rem; }
        tr.leader td:first-child { font-weight: 700; }
        .role-leader { color: #1a7f37; font-weight: 600; }
        .down { color: #cf222e; }
        .muted { color: #8c959f; }
        #error { color: #cf222e; margin-top: .6rem; }
        </style>
        </head>
        <body>
        <h1>Keyper cluster</h1>
        <div id="summary">loading…</div>
        <div class="wrap"><table>
        <thead><tr><th>member</th><th>role</th><th>term</th><th>commit</th><th>applied</th><th>match</th><th>lag</th>
        <th>writes/s</th><th>write ms</th><th>reads/s</th><th>read ms</th><th>keys</th><th>address</th></tr></thead>
        <tbody id="members"></tbody>
        </table></div>
        <div id="error"></div>
        <script>
        "use strict";
        let previous = {};
        function cell(text, cls) {
          const td = document.createElement("td");
          td.textContent = text;
          if (cls) td.className = cls;
          return td;
        }
        function rate(member, now) {
          const before = previous[member.id];
          const out = { writes: "–", reads: "–", writeMs: "–", readMs: "–" };
          if (member.requests && before && before.requests) {
            const seconds = (now - before.at) / 1000;
            const w = member.requests.writes - before.requests.writes, r = member.requests.reads - before.requests.reads;
            if (seconds > 0) { out.writes = (w / seconds).toFixed(0); out.reads = (r / seconds).toFixed(0); }
            if (w > 0) out.writeMs = ((member.requests.write_ns - before.requests.write_ns) / w / 1e6).toFixed(2);
            if (r > 0) out.readMs = ((member.requests.read_ns - before.requests.read_ns) / r / 1e6).toFixed(2);
          }
          if (member.requests) previous[member.id] = { at: now, requests: member.requests };
          return out;
        }
        async function refresh() {
          try {
            const response = await fetch("/v1/cluster", { cache: "no-store" });
            const cluster = await response.json();
            const now = Date.now();
            const commit = Math.max(0, ...cluster.members.map(m => m.commit_index || 0));
            const rows = cluster.members.map(m => {
              const tr = document.createElement("tr");
              tr.dataset.member = m.id;
              tr.dataset.role = m.reachable ? m.role : "unreachable";
              if (m.role === "leader") tr.className = "leader";
              const r = rate(m, now);
              tr.append(cell(m.id + (m.voter ? "" : " (learner)")));
              tr.append(cell(m.reachable ? m.role : "unreachable", m.reachable ? (m.role === "leader" ? "text role-leader" : "text") : "text down"));
              tr.append(cell(m.term ?? "–"), cell(m.commit_index ?? "–"), cell(m.applied_index ?? "–"), cell(m.match_index ?? "–"));
              tr.append(cell(m.applied_index == null ? "–" : Math.max(0, commit - m.applied_index)));
              tr.append(cell(r.writes), cell(r.writeMs), cell(r.reads), cell(r.readMs), cell(m.keys ?? "–"));
              tr.append(cell(m.http_addr, "text muted"));
              return tr;
            });
            document.getElementById("members").replaceChildren(...rows);
            const up = cluster.members.filter(m => m.reachable).length;
            document.getElementById("summary").textContent =
              "leader: " + (cluster.leader || "none") + " · " + up + " of " + cluster.members.length + " members answering" +
              (cluster.cluster_id ? " · cluster " + cluster.cluster_id : "") + " · updated " + new Date(now).toLocaleTimeString();
            document.getElementById("summary").dataset.leader = cluster.leader || "";
            document.getElementById("error").textContent = "";
          } catch (error) {
            document.getElementById("error").textContent = "this node does not answer: " + error;
          }
        }
        refresh();
        setInterval(refresh, 1000);
        </script>
        </body>
        </html>
        """
}

extension KeyValueNode {
    /// ``status()`` with the key requests this node answered (`GET /v1/status` and the status page).
    func statusWithRequests() async throws -> NodeStatus {
        var status = try await status()
        status.requests = metrics.requestTotals
        return status
    }
}
