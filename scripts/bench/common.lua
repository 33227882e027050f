-- Shared by keyper.lua and etcd.lua (loaded with dofile): thread ids, the key and value
-- tables, base64, request selection and the machine-readable report printed by done().
--
-- Arguments (after `--` on the wrk command line): WORKLOAD KEYSPACE VALUE_BYTES [READ_PERCENT]
--   WORKLOAD     write | read | mix | noop | health
--   KEYSPACE     keys are bench/0 .. bench/(KEYSPACE-1)
--   VALUE_BYTES  size of every written value
--   READ_PERCENT for mix: the share of reads (default 90)
--
-- Every request is formatted once in init(), so the run itself only picks a random index
-- into a table of ready-made requests: the client does the same (tiny) work per request for
-- both systems, and no encoding happens while the clock runs.

local common = {}

-- setup() runs in wrk's main Lua state once per thread, before that thread's init(); it hands
-- each thread a distinct id so the threads seed their random generators differently.
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 (RFC 4648, with padding), plain arithmetic so it works on Lua 5.1/LuaJIT.
function common.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local function ch(shift)
      local v = math.floor(n / shift) % 64
      return B64:sub(v + 1, v + 1)
    end
    out[#out + 1] = ch(262144) .. ch(4096) .. (b and ch(64) or "=") .. (c and ch(1) or "=")
  end
  return table.concat(out)
end

-- The key and value for index i (0-based). Values differ per key but are deterministic, so
-- both systems store exactly the same bytes.
function common.key(i)
  return "bench/" .. i
end

function common.value(i, size)
  local pattern = "value-of-bench/" .. i .. "-"
  local reps = math.ceil(size / #pattern)
  return string.rep(pattern, reps):sub(1, size)
end

-- Parses the script arguments; returns a table with workload, keys, value_bytes, read_percent.
function common.parse_args(args)
  local cfg = {
    workload = args[1] or "write",
    keys = tonumber(args[2] or "1000"),
    value_bytes = tonumber(args[3] or "256"),
    read_percent = tonumber(args[4] or "90"),
  }
  local ok = { write = true, read = true, mix = true, noop = true, health = true }
  if not ok[cfg.workload] then
    error("unknown workload '" .. tostring(cfg.workload) .. "' (write|read|mix|noop|health)")
  end
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919)
  return cfg
end

-- Builds the global request() function for cfg from the system's pre-formatted tables:
-- writes[i], reads[i] (i = 1..keys) and single (for noop/health).
function common.install_request(cfg, writes, reads, single)
  local n = cfg.keys
  local random = math.random
  if cfg.workload == "write" then
    request = function() return writes[random(n)] end
  elseif cfg.workload == "read" then
    request = function() return reads[random(n)] end
  elseif cfg.workload == "mix" then
    local p = cfg.read_percent
    request = function()
      if random(100) <= p then return reads[random(n)] end
      return writes[random(n)]
    end
  else
    request = function() return single end
  end
end

-- done() runs once, in the main state, after all threads finish. wrk's `--latency` table only
-- has 50/75/90/99, so print exact percentiles (microseconds) and the error counts in one line
-- that bench-compare.sh parses. summary.errors.status counts responses with status > 399.
function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d rps=%.2f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d" ..
    " status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    summary.requests, summary.duration, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end

return common
