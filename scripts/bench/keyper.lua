-- wrk script for Keyper's HTTP API (see common.lua for the arguments).
--   write  PUT /v1/keys/bench/<n>, body = the value bytes
--   read   GET /v1/keys/bench/<n>  (linearizable: Keyper's default)
--   mix    READ_PERCENT reads, the rest writes
--   noop   GET /v1/health          (answered locally: a leader is known, the disk is not full)
--   health GET /v1/health          (the same route)
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

function init(args)
  local cfg = common.parse_args(args)
  local put_headers = { ["Content-Type"] = "application/octet-stream" }
  local writes, reads = {}, {}
  for i = 1, cfg.keys do
    local path = "/v1/keys/" .. common.key(i - 1)
    writes[i] = wrk.format("PUT", path, put_headers, common.value(i - 1, cfg.value_bytes))
    reads[i] = wrk.format("GET", path)
  end
  common.install_request(cfg, writes, reads, wrk.format("GET", "/v1/health"))
end
