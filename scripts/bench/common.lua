-- Shared by keyper.lua and etcd.lua (loaded with dofile): thread ids, base64, request
-- selection, the preload phase and the machine-readable report printed by done().
--
-- Arguments (after `--` on the wrk command line):
--   WORKLOAD KEYSPACE VALUE_BYTES [READ_PERCENT] [FROM] [THREADS]
--   WORKLOAD     write | read | mix | cas | txn | noop | health | preload
--                cas: a conditional write of a random key (it exists: preloaded);
--                txn: a transaction comparing key N's version, then putting keys N..N+3;
--                txn1: the same with one put (key N): what a transaction costs beyond its writes
--   KEYSPACE     keys are bench/0 .. bench/(KEYSPACE-1), chosen at random (uniformly)
--   VALUE_BYTES  size of every written value
--   READ_PERCENT for mix: the share of reads (default 90)
--   FROM, THREADS  for preload: write every key from bench/FROM to bench/(KEYSPACE-1) once,
--                each of the THREADS wrk threads its share; each thread prints
--                "preload: thread N done (F failed)" on stderr when its share is answered
--
-- Requests are formatted as they are sent (a key space of 10^6 keys does not fit in a table
-- of ready-made requests per thread); a value is a 12-byte counter and a fixed rest encoded
-- once (common.value_rest), so a request costs the client a few string operations on either
-- system.

local common = {}

-- setup() runs in wrk's main Lua state once per thread, before that thread's init(); it hands
-- each thread a distinct id so the threads seed their random generators differently and
-- split a preload between them.
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

function common.key(i)
  return "bench/" .. i
end

-- Values: printable, the same bytes for every system, and different on every write. A store
-- may skip rewriting a value identical to the one it holds (SQLite leaves such a page clean),
-- which no real update lets it do, so the first 12 bytes are a counter (this thread's id and
-- its write number) and the rest is a fixed pattern. 12 is a multiple of 3, so for etcd's v3
-- API the counter's base64 is simply put in front of the rest's, encoded once.
common.stamp_bytes = 12

function common.value_rest(size)
  local pattern = "value-of-bench-"
  local rest = math.max(0, size - common.stamp_bytes)
  return string.rep(pattern, math.ceil(rest / #pattern)):sub(1, rest)
end

-- A function returning the next write's 12-byte stamp.
function common.stamper()
  local written = 0
  local id = thread_id or 0
  return function()
    written = written + 1
    return string.format("%03d%09d", id % 1000, written % 1000000000)
  end
end

-- Parses the script arguments.
function common.parse_args(args)
  local cfg = {
    workload = args[1] or "write",
    keys = tonumber(args[2] or "1000"),
    value_bytes = tonumber(args[3] or "256"),
    read_percent = tonumber(args[4] or "90"),
    from = tonumber(args[5] or "0"),
    threads = tonumber(args[6] or "1"),
  }
  local ok = { write = true, read = true, mix = true, cas = true, txn = true, txn1 = true, noop = true, health = true,
               preload = true }
  if not ok[cfg.workload] then
    error("unknown workload '" .. tostring(cfg.workload) .. "' (write|read|mix|cas|txn|txn1|noop|health|preload)")
  end
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919)
  return cfg
end

-- Builds the global request() (and, for preload, response()) for cfg from the system's
-- request makers: write(i) and read(i) format a request for key i, cas(i) a conditional write
-- of it, txn(i, n, puts) a transaction putting keys i..i+puts-1 (modulo n); single is the pre-formatted
-- request of noop/health.
function common.install_request(cfg, write, read, single, cas, txn)
  local n = cfg.keys
  local random = math.random
  if cfg.workload == "cas" then
    request = function() return cas(random(n) - 1) end
  elseif cfg.workload == "txn" then
    request = function() return txn(random(n) - 1, n, 4) end
  elseif cfg.workload == "txn1" then
    request = function() return txn(random(n) - 1, n, 1) end
  elseif cfg.workload == "write" then
    request = function() return write(random(n) - 1) end
  elseif cfg.workload == "read" then
    request = function() return read(random(n) - 1) end
  elseif cfg.workload == "mix" then
    local p = cfg.read_percent
    request = function()
      if random(100) <= p then return read(random(n) - 1) end
      return write(random(n) - 1)
    end
  elseif cfg.workload == "preload" then
    -- This thread's share: FROM + (id - 1), then every THREADS-th key, in order, and then
    -- around again (rewriting a key is harmless). wrk calls the first thread's request() once
    -- before any connection opens, to check it, and drops what it returns: the second time
    -- around re-sends that key. The thread stops once its share and as many again as it has
    -- connections are answered (with one request in flight per connection, the first pass
    -- is answered by then). Thread 1 reports progress on stderr.
    local id, step = thread_id or 1, cfg.threads
    local first = cfg.from + id - 1
    local share = 0
    for _ = first, n - 1, step do share = share + 1 end
    local target = share + 64
    local answered, failed, next_key = 0, 0, first
    local started = os.time()
    request = function()
      local key = next_key
      next_key = next_key + step
      if next_key >= n then next_key = first end
      return write(key)
    end
    response = function(status)
      answered = answered + 1
      if status < 200 or status > 299 then failed = failed + 1 end
      if id == 1 and answered % 20000 == 0 then
        local elapsed = math.max(1, os.time() - started)
        io.stderr:write(string.format("preload: thread 1 of %d: %d of %d keys, %.0f/s, %d failed\n",
          step, answered, share, answered / elapsed, failed))
      end
      if answered == target then
        -- The line the script waits for, one per thread (wrk itself sleeps out its duration).
        io.stderr:write(string.format("preload: thread %d done (%d failed)\n", id, failed))
        io.stderr:flush()
        wrk.thread:stop()
      end
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
