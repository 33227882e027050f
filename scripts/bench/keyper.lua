-- wrk script for Keyper's HTTP API (see common.lua for the arguments).
--   write, preload  PUT /v1/keys/bench/<n>, body = the value bytes
--   read            GET /v1/keys/bench/<n>  (linearizable: Keyper's default)
--   mix             READ_PERCENT reads, the rest writes
--   cas             PUT /v1/keys/bench/<n> with If-Match: * (the key exists: a condition checked when applied)
--   txn             POST /v1/txn: compare bench/<n>'s version > 0, then put bench/<n> .. bench/<n+3> (txn1: bench/<n> alone)
--   noop, health    GET /v1/health          (answered locally: a leader is known, the disk is not full)
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

function init(args)
  local cfg = common.parse_args(args)
  local rest = common.value_rest(cfg.value_bytes)
  local stamp = common.stamper()
  local put_headers = { ["Content-Type"] = "application/octet-stream" }
  local format = wrk.format
  local function write(i) return format("PUT", "/v1/keys/bench/" .. i, put_headers, stamp() .. rest) end
  local function read(i) return format("GET", "/v1/keys/bench/" .. i) end
  local cas_headers = { ["Content-Type"] = "application/octet-stream", ["If-Match"] = "*" }
  local function cas(i) return format("PUT", "/v1/keys/bench/" .. i, cas_headers, stamp() .. rest) end
  local json = { ["Content-Type"] = "application/json" }
  local function txn(i, n, count)
    local puts = {}
    for k = 0, count - 1 do
      puts[#puts + 1] = '{"op":"put","key":"bench/' .. ((i + k) % n) .. '","value":"' .. stamp() .. rest .. '"}'
    end
    return format("POST", "/v1/txn", json, '{"compare":[{"key":"bench/' .. i .. '","target":"version","op":">","value":0}],' ..
      '"success":[' .. table.concat(puts, ",") .. ']}')
  end
  common.install_request(cfg, write, read, format("GET", "/v1/health"), cas, txn)
end
