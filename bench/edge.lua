-- wrk script for bench/edge.py: run with as many threads as connections (-tN -cN), so each
-- thread's Lua state sees one connection and request() / response() alternate: the time
-- between them is that request's latency, kept per status (wrk's own histogram mixes them).
-- Latency is counted from the request's write, as wrk counts it: for a connection refused
-- with a canned 503, that includes its wait in the server's accept queue, but not the
-- connect itself (wrk writes once connected), so the time from a closing answer to the
-- next request's write is kept too (EDGE-RECONNECT). A request still unanswered when the
-- run ends is in neither wrk's figures nor its errors: each is printed with its age.
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
-- Globals, so that done() can read them from each thread (thread:get).
started = nil -- the unanswered request's write time
closed_at = nil -- when a response closed the connection (wrk then reconnects)
no_retry_after = 0 -- 503s without Retry-After
-- Per thread, flat (wrk copies a flat table out of a thread, not a nested one):
-- status, microseconds, status, microseconds...
answers = {}
reconnects = {} -- microseconds from a closing response to the next request's write

function setup(thread)
  table.insert(threads, thread)
end

function request()
  started = now_us()
  if closed_at then
    reconnects[#reconnects + 1] = math.floor(started - closed_at)
    closed_at = nil
  end
  return wrk.request()
end

function response(status, headers, body)
  local now = now_us()
  if started then
    answers[#answers + 1] = status
    answers[#answers + 1] = math.floor(now - started)
    started = nil
  end
  if status == 503 and not headers["retry-after"] and not headers["Retry-After"] then
    no_retry_after = no_retry_after + 1
  end
  local connection = headers["connection"] or headers["Connection"] or ""
  if connection:lower() == "close" then
    closed_at = now
  end
end

function done(summary, latency, _)
  local e = summary.errors
  local ended = now_us()
  local lines = {}
  local missing_retry_after = 0
  for _, thread in ipairs(threads) do
    local flat = thread:get("answers")
    for i = 1, #flat, 2 do
      lines[#lines + 1] = "EDGE-ANSWER " .. flat[i] .. " " .. flat[i + 1] .. "\n"
    end
    for _, gap in ipairs(thread:get("reconnects")) do
      lines[#lines + 1] = "EDGE-RECONNECT " .. gap .. "\n"
    end
    local pending = thread:get("started")
    if pending then
      lines[#lines + 1] = "EDGE-PENDING " .. math.floor(ended - pending) .. "\n"
    end
    missing_retry_after = missing_retry_after + thread:get("no_retry_after")
  end
  io.write(string.format(
    'EDGE-SUMMARY {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "non_2xx_3xx": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d, "no_retry_after": %d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout, missing_retry_after
  ))
  io.write(table.concat(lines))
end
