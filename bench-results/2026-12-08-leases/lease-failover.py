import json, time, urllib.request, subprocess, os, signal
nodes = {"node1": "http://127.0.0.1:19081", "node2": "http://127.0.0.1:19082", "node3": "http://127.0.0.1:19083"}
def req(method, url, body=None):
    r = urllib.request.Request(url, data=body.encode() if body is not None else None, method=method)
    try:
        with urllib.request.urlopen(r, timeout=5) as resp: return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e: return e.code, e.read().decode()
    except Exception as e: return 0, str(e)
def leader():
    for name, n in nodes.items():
        s, b = req("GET", n + "/v1/status")
        if s == 200 and json.loads(b).get("is_leader"): return name
lead = leader()
others = [n for n in nodes if n != lead]
ttl = 5
s, b = req("POST", nodes[others[0]] + "/v1/leases", json.dumps({"ttl": f"{ttl}s"}))
lease = json.loads(b)["id"]
req("PUT", nodes[others[1]] + f"/v1/keys/failover?lease={lease}", "x")
time.sleep(2)
s, _ = req("POST", nodes[others[0]] + f"/v1/leases/{lease}/keepalive")
kept = time.monotonic()
pid = subprocess.check_output(["pgrep", "-f", f"node-id {lead} "]).split()[0]
os.kill(int(pid), signal.SIGKILL)
killed = time.monotonic()
new = None
while True:
    s, b = req("GET", nodes[others[0]] + "/v1/status")
    if s == 200 and json.loads(b).get("leader_id") not in (None, lead): new = time.monotonic(); break
    time.sleep(0.01)
while True:
    s, _ = req("GET", nodes[others[1]] + "/v1/keys/failover?consistency=stale")
    if s == 404: break
    time.sleep(0.005)
gone = time.monotonic()
print(f"TTL {ttl}s, leader {lead} killed right after a keepalive (through a follower): new leader after {new-killed:.2f} s; key gone {gone-kept:.2f} s after the last keepalive ({gone-new:.2f} s after the new leader was known)")
