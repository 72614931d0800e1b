-- wrk script for Scripts/fault-scenario.sh.
--   wrk -t1 -c32 -d16s --timeout 12s -s Scripts/lua/fault.lua http://127.0.0.1:PORT/ -- METHOD [T0] [TAG]
-- METHOD  GET or POST (POST sends {"msg":"x"} as application/json)
-- T0      wall-clock start of the run in seconds since the epoch (decimals allowed); responses are
--         counted per second since T0, so the caller can line them up with the events it schedules
--         at T0 + k seconds. Default: the time the thread starts.
-- TAG     prefix of the request ids (default: the method's first letter)
-- Every request carries a unique header `X-Request-Id: TAG-THREAD-COUNTER`.
-- done() prints machine-readable lines, nothing else:
--   SECOND t=3 n=1234 ok=1230        responses that arrived in second [T0+3, T0+4): all / 2xx
--                                     (every second from 0 to the last one, zeros included)
--   STATUS code=504 n=2               responses per status
--   ERRORS connect=0 read=0 write=0 timeout=0 status=2   wrk's socket errors (status = responses > 399)
--   TOTAL requests=N responses=N duration_us=N p50_us=N p99_us=N max_us=N sent=N
-- (requests = wrk's count of completed requests; sent = ids handed out by request())
local ffi_ok, ffi = pcall(require, "ffi")
local now
if ffi_ok then
  pcall(ffi.cdef, "typedef struct { long tv_sec; long tv_nsec; } lbk_fault_timespec; int clock_gettime(int, lbk_fault_timespec *);")
  local ts = ffi.new("lbk_fault_timespec")
  -- CLOCK_REALTIME (0): the same clock as `date +%s%N` in the calling script
  now = function() ffi.C.clock_gettime(0, ts); return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9 end
else
  now = os.time
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  method = args[1] or "GET"
  t0 = tonumber(args[2] or "") or now()
  tag = args[3] or method:sub(1, 1)
  tid = tid or 1
  wrk.method = method
  if method == "POST" then
    wrk.body = '{"msg":"x"}'
    wrk.headers["Content-Type"] = "application/json"
  end
  counter = 0
  per_sec, ok_sec, codes = {}, {}, {}   -- globals: read back with thread:get() in done()
end

function request()
  counter = counter + 1
  wrk.headers["X-Request-Id"] = tag .. "-" .. tid .. "-" .. counter
  return wrk.format()
end

function response(status, headers, body)
  local s = math.floor(now() - t0)
  if s < 0 then s = 0 end
  per_sec[s] = (per_sec[s] or 0) + 1
  if status >= 200 and status <= 299 then ok_sec[s] = (ok_sec[s] or 0) + 1 end
  codes[status] = (codes[status] or 0) + 1
end

local function merge(dst, src)
  for k, v in pairs(src or {}) do dst[k] = (dst[k] or 0) + v end
end

function done(summary, latency, requests)
  local n, ok, c, sent = {}, {}, {}, 0
  for _, t in ipairs(threads) do
    merge(n, t:get("per_sec")); merge(ok, t:get("ok_sec")); merge(c, t:get("codes"))
    sent = sent + (t:get("counter") or 0)
  end
  local last, responses = -1, 0
  for s, v in pairs(n) do
    if s > last then last = s end
    responses = responses + v
  end
  for s = 0, last do
    io.write(string.format("SECOND t=%d n=%d ok=%d\n", s, n[s] or 0, ok[s] or 0))
  end
  local keys = {}
  for k in pairs(c) do table.insert(keys, k) end
  table.sort(keys)
  for _, k in ipairs(keys) do io.write(string.format("STATUS code=%d n=%d\n", k, c[k])) end
  local e = summary.errors
  io.write(string.format("ERRORS connect=%d read=%d write=%d timeout=%d status=%d\n",
    e.connect, e.read, e.write, e.timeout, e.status))
  io.write(string.format("TOTAL requests=%d responses=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d sent=%d\n",
    summary.requests, responses, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, sent))
end
