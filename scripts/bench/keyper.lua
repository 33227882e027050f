-- wrk script for Keyper's HTTP API (see common.lua for the arguments).
--   write, preload  PUT /v1/keys/bench/<n>, body = the value bytes
--   read            GET /v1/keys/bench/<n>  (linearizable: Keyper's default)
--   mix             READ_PERCENT reads, the rest writes
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
  common.install_request(cfg, write, read, format("GET", "/v1/health"))
end
