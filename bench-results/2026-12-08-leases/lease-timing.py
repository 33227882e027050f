import json, time, urllib.request, threading, sys, subprocess, os, signal
nodes = ["http://127.0.0.1:19081", "http://127.0.0.1:19082", "http://127.0.0.1:19083"]
def req(method, url, body=None):
    r = urllib.request.Request(url, data=body.encode() if body is not None else None, method=method)
    try:
        with urllib.request.urlopen(r, timeout=5) as resp: return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e: return e.code, e.read().decode()
    except Exception as e: return 0, str(e)
def leader():
    for n in nodes:
        s, b = req("GET", n + "/v1/status")
        if s == 200:
            j = json.loads(b); 
            if j.get("is_leader"): return n
    return None
ttl = 3
results = []
def one(i):
    t0 = time.monotonic()
    s, b = req("POST", nodes[1] + "/v1/leases", json.dumps({"ttl": f"{ttl}s"}))
    lease = json.loads(b)["id"]
    req("PUT", nodes[2] + f"/v1/keys/timing/{i}?lease={lease}", "x")
    while True:
        s, _ = req("GET", nodes[0] + f"/v1/keys/timing/{i}?consistency=stale")
        if s == 404: break
        time.sleep(0.005)
    results.append(time.monotonic() - t0 - ttl)
threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
[t.start() for t in threads]; [t.join() for t in threads]
results.sort()
print(f"TTL {ttl}s, 20 leases granted through a follower: deleted after TTL + min {results[0]*1000:.0f} ms, median {results[10]*1000:.0f} ms, max {results[-1]*1000:.0f} ms (from the grant request to the key gone on another node)")
