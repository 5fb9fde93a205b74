-- wrk script: every request GETs one of the paths given after `--`, picked at random,
-- and the run ends with one machine-readable line for bench/run.py:
--
--   wrk -t2 -c64 -d15s -s bench/paths.lua http://127.0.0.1:8000 -- /country/GB /country/FR
--   wrk -t2 -c64 -d15s -s bench/paths.lua http://127.0.0.1:8000 -- '/country?limit=50'
--
-- Requests are formatted once per thread (wrk.format), so picking one costs the load
-- generator almost nothing. Without paths it GETs the URL's own path.

local requests = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("seed", thread_count)
end

function init(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
  for i = 1, #args do
    requests[#requests + 1] = wrk.format("GET", args[i])
  end
  if #requests == 0 then
    requests[1] = wrk.format("GET")
  end
end

function request()
  return requests[math.random(#requests)]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "non_2xx_3xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout
  ))
end
