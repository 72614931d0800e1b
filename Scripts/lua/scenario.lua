-- wrk script for Scripts/chaos.sh and Scripts/slowness.sh.
--   wrk ... -s scenario.lua http://127.0.0.1:PORT/ -- POST   (default: POST {"msg":"demo"}, application/json)
--   wrk ... -s scenario.lua http://127.0.0.1:PORT/ -- GET
-- Per thread it counts responses by status, by X-Handled-By (the echo backend's port) and non-2xx
-- responses per second since the thread started. done() prints one line:
--   SCENARIO requests=N duration_us=N p50_us=N p99_us=N max_us=N non2xx=N err_connect=N err_read=N
--            err_write=N err_status=N err_timeout=N codes=200:N,502:N by=PORT:N,... bad_by_s=S:N,...
local ffi_ok, ffi = pcall(require, "ffi")
local now
if ffi_ok then
  pcall(ffi.cdef, "typedef struct { long tv_sec; long tv_nsec; } lbk_timespec; int clock_gettime(int, lbk_timespec *);")
  local ts = ffi.new("lbk_timespec")
  now = function() ffi.C.clock_gettime(1, ts); return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9 end
else
  now = os.time
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function init(args)
  local m = args[1] or "POST"
  wrk.method = m
  if m == "POST" then
    wrk.body = '{"msg":"demo"}'
    wrk.headers["Content-Type"] = "application/json"
  end
  codes, by, bad = {}, {}, {}   -- globals: read back with thread:get() in done()
  t0 = now()
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
  local hb = headers["X-Handled-By"] or headers["x-handled-by"] or "?"
  by[hb] = (by[hb] or 0) + 1
  if status < 200 or status > 299 then
    local s = math.floor(now() - t0)
    bad[s] = (bad[s] or 0) + 1
  end
end

local function merge(dst, src)
  for k, v in pairs(src or {}) do dst[k] = (dst[k] or 0) + v end
end

local function fmt(t)
  local keys = {}
  for k in pairs(t) do table.insert(keys, k) end
  table.sort(keys, function(a, b)
    local na, nb = tonumber(a), tonumber(b)
    if na and nb then return na < nb end
    return tostring(a) < tostring(b)
  end)
  local out = {}
  for _, k in ipairs(keys) do table.insert(out, tostring(k) .. ":" .. tostring(t[k])) end
  return #out > 0 and table.concat(out, ",") or "-"
end

function done(summary, latency, requests)
  local c, b, s = {}, {}, {}
  for _, t in ipairs(threads) do
    merge(c, t:get("codes")); merge(b, t:get("by")); merge(s, t:get("bad"))
  end
  local non2xx = 0
  for k, v in pairs(c) do
    if tonumber(k) < 200 or tonumber(k) > 299 then non2xx = non2xx + v end
  end
  local e = summary.errors
  io.write(string.format(
    "SCENARIO requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d codes=%s by=%s bad_by_s=%s\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    non2xx, e.connect, e.read, e.write, e.status, e.timeout, fmt(c), fmt(b), fmt(s)))
end
