-- wrk script: the write cycle POST /country -> PATCH /country/{code} (If-Match: the POST's
-- ETag) -> DELETE /country/{code}, on codes no ISO country has, and one machine-readable
-- line at the end for bench/run.py:
--
--   wrk -t2 -c64 -d15s -s bench/writes.lua http://127.0.0.1:8000 -- API_KEY THREADS XA XB ...
--
-- A code is used by one cycle at a time: each thread takes every THREADS-th code, starts a
-- cycle on a free one when no step is waiting, and learns which cycle a response ends from
-- the X-Request-ID it sent (w-<code>-<step>; the servers echo it), so the next step of a
-- code is sent only after its previous one was answered, on whichever connection is free.
-- A code is free again once its DELETE was answered. Every step follows its predecessor
-- whatever the status (a POST refused with 409 is still PATCHed and DELETEd), and every
-- answer outside 2xx is counted.

local api_key
local free, ready = { first = 1, last = 0 }, { first = 1, last = 0 }
local etags = {}
local threads = {}
non_2xx, cycles, unattributed = 0, 0, 0

local function push(queue, value)
  queue.last = queue.last + 1
  queue[queue.last] = value
end

local function pop(queue)
  if queue.first > queue.last then
    return nil
  end
  local value = queue[queue.first]
  queue[queue.first] = nil
  queue.first = queue.first + 1
  return value
end

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

function init(args)
  api_key = args[1]
  local count = tonumber(args[2])
  for i = 3, #args do
    if (i - 3) % count == id - 1 then
      push(free, args[i])
    end
  end
end

function request()
  local step = pop(ready)
  local code
  if step then
    code, step = step[1], step[2]
  else
    code, step = pop(free), 1
    if code == nil then
      error("writes.lua: every code of this thread is in a cycle: fewer connections")
    end
  end
  local headers = { ["X-API-Key"] = api_key, ["X-Request-ID"] = "w-" .. code .. "-" .. step }
  if step == 1 then
    headers["Content-Type"] = "application/json"
    local body = string.format(
      '{"alpha2":"%s","alpha3":"%sX","numeric":"999","name":"Bench %s",'
        .. '"official_name":"Bench Republic of %s"}',
      code, code, code, code
    )
    return wrk.format("POST", "/country", headers, body)
  elseif step == 2 then
    headers["Content-Type"] = "application/json"
    headers["If-Match"] = etags[code]
    local body = string.format('{"name":"Bench %s (changed)","official_name":null}', code)
    return wrk.format("PATCH", "/country/" .. code, headers, body)
  end
  return wrk.format("DELETE", "/country/" .. code, headers)
end

function response(status, headers, _)
  if status < 200 or status > 299 then
    non_2xx = non_2xx + 1
  end
  local code, step = string.match(headers["x-request-id"] or "", "^w%-(%u%u)%-(%d)$")
  if code == nil then
    unattributed = unattributed + 1 -- its code stays out of use: no step can follow it
    return
  end
  step = tonumber(step)
  if step == 1 then
    etags[code] = headers["etag"]
  end
  if step < 3 then
    push(ready, { code, step + 1 })
  else
    etags[code] = nil
    cycles = cycles + 1
    push(free, code)
  end
end

function done(summary, latency, _)
  local bad, ended, lost = 0, 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non_2xx")
    ended = ended + thread:get("cycles")
    lost = lost + thread:get("unattributed")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "non_2xx_3xx": %d, "socket_errors": %d, "cycles": %d, '
      .. '"unattributed": %d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max,
    bad, e.connect + e.read + e.write + e.timeout, ended, lost
  ))
end
