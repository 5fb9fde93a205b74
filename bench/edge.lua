-- wrk script for bench/edge.py: run with as many threads as connections (-tN -cN), so each
-- thread's Lua state sees one connection and request() / response() alternate: the time
-- between them is that request's latency, kept per status (wrk's own histogram mixes them).
-- Latency is counted from the request's write, as wrk counts it: for a connection refused
-- with a canned 503, that includes its wait in the server's accept queue.
--
--   wrk -t1000 -c1000 -d10s --timeout 10s -s bench/edge.lua http://127.0.0.1:8000/country/GB

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } edge_timespec;
  int clock_gettime(int clk_id, edge_timespec *tp);
]]
local ts = ffi.new("edge_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local threads = {}
local started = nil
-- Per thread, flat (wrk copies a flat table out of a thread, not a nested one):
-- status, microseconds, status, microseconds...
answers = {}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  started = now_us()
  return wrk.request()
end

function response(status, headers, body)
  if started then
    answers[#answers + 1] = status
    answers[#answers + 1] = math.floor(now_us() - started)
    started = nil
  end
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'EDGE-SUMMARY {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "non_2xx_3xx": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout
  ))
  for _, thread in ipairs(threads) do
    local flat = thread:get("answers")
    local lines = {}
    for i = 1, #flat, 2 do
      lines[#lines + 1] = "EDGE-ANSWER " .. flat[i] .. " " .. flat[i + 1] .. "\n"
    end
    io.write(table.concat(lines))
  end
end
