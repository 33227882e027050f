-- wrk script for etcd's two HTTP APIs (see common.lua for the arguments; then API: v3 or v2,
-- default v3, as the 7th argument).
--
-- v3, the JSON gateway (grpc-gateway; keys and values base64 in JSON):
--   write, preload  POST /v3/kv/put   {"key": b64, "value": b64}
--   read            POST /v3/kv/range {"key": b64}   (linearizable: the v3 default)
-- v2, the v2 keys API (etcd --enable-v2; a separate, in-memory store):
--   write, preload  PUT /v2/keys/bench/<n>, form body value=<the value>
--   read            GET /v2/keys/bench/<n>?quorum=true   (linearizable: a quorum read through Raft;
--                   without quorum=true a v2 read is served locally and may be stale)
--   cas             v3: POST /v3/kv/txn comparing the key's version > 0, then a put (the gateway's
--                   only conditional write); v2: PUT /v2/keys/bench/<n>?prevExist=true
--   txn             v3 only: POST /v3/kv/txn comparing bench/<n>'s version > 0, then putting
--                   bench/<n> .. bench/<n+3>
-- Both:
--   mix             READ_PERCENT reads, the rest writes
--   noop            GET /version      (answered locally; etcd's real no-op route)
--   health          GET /health       (NOT a no-op in etcd 3.4: it proposes a v2 QGET through Raft)
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

function init(args)
  local cfg = common.parse_args(args)
  local api = args[7] or "v3"
  local rest = common.value_rest(cfg.value_bytes)
  local stamp = common.stamper()
  local format = wrk.format
  local write, read, cas, txn
  if api == "v2" then
    local form = { ["Content-Type"] = "application/x-www-form-urlencoded" }
    -- The value is URL-safe (digits and the pattern's letters and dashes).
    write = function(i) return format("PUT", "/v2/keys/bench/" .. i, form, "value=" .. stamp() .. rest) end
    read = function(i) return format("GET", "/v2/keys/bench/" .. i .. "?quorum=true") end
    cas = function(i) return format("PUT", "/v2/keys/bench/" .. i .. "?prevExist=true", form, "value=" .. stamp() .. rest) end
    txn = function() error("etcd's v2 API has no transactions") end
  elseif api == "v3" then
    local json = { ["Content-Type"] = "application/json" }
    local rest64 = common.base64(rest)
    local b64 = common.base64
    write = function(i)
      return format("POST", "/v3/kv/put", json,
        '{"key":"' .. b64("bench/" .. i) .. '","value":"' .. b64(stamp()) .. rest64 .. '"}')
    end
    read = function(i)
      return format("POST", "/v3/kv/range", json, '{"key":"' .. b64("bench/" .. i) .. '"}')
    end
    local function put(i) return '{"request_put":{"key":"' .. b64("bench/" .. i) .. '","value":"' .. b64(stamp()) .. rest64 .. '"}}' end
    local function compare(i) return '{"key":"' .. b64("bench/" .. i) .. '","target":"VERSION","result":"GREATER","version":"0"}' end
    cas = function(i)
      return format("POST", "/v3/kv/txn", json, '{"compare":[' .. compare(i) .. '],"success":[' .. put(i) .. ']}')
    end
    txn = function(i, n, count)
      local puts = {}
      for k = 0, count - 1 do puts[#puts + 1] = put((i + k) % n) end
      return format("POST", "/v3/kv/txn", json, '{"compare":[' .. compare(i) .. '],"success":[' .. table.concat(puts, ",") .. ']}')
    end
  else
    error("unknown etcd API '" .. tostring(api) .. "' (v2|v3)")
  end
  local single = cfg.workload == "health" and "/health" or "/version"
  common.install_request(cfg, write, read, format("GET", single), cas, txn)
end
