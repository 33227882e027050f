-- wrk script for etcd's v3 JSON gateway (grpc-gateway; keys and values are base64 in JSON).
-- See common.lua for the arguments.
--   write  POST /v3/kv/put   {"key": b64, "value": b64}
--   read   POST /v3/kv/range {"key": b64}   (linearizable: the v3 default, serializable=false)
--   mix    READ_PERCENT reads, the rest writes
--   noop   GET /version      (answered locally; etcd's real no-op route)
--   health GET /health       (NOT a no-op in etcd 3.4: it proposes a v2 QGET through Raft, so
--                             every call is a log entry, replicated and fsynced on a quorum)
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

function init(args)
  local cfg = common.parse_args(args)
  local json = { ["Content-Type"] = "application/json" }
  local writes, reads = {}, {}
  for i = 1, cfg.keys do
    local key = common.base64(common.key(i - 1))
    local value = common.base64(common.value(i - 1, cfg.value_bytes))
    writes[i] = wrk.format("POST", "/v3/kv/put", json,
      '{"key":"' .. key .. '","value":"' .. value .. '"}')
    reads[i] = wrk.format("POST", "/v3/kv/range", json, '{"key":"' .. key .. '"}')
  end
  local single = cfg.workload == "health" and "/health" or "/version"
  common.install_request(cfg, writes, reads, wrk.format("GET", single))
end
