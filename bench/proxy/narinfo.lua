-- wrk script: GET the narinfos listed (one request path per line) in the file
-- named by $NARINFO_LIST, round-robin per thread, and print a JSON summary.
local paths = {}
for line in io.lines(os.getenv("NARINFO_LIST")) do
  if line ~= "" then paths[#paths + 1] = line end
end
assert(#paths > 0, "empty NARINFO_LIST")

local counter = 0
function setup(thread)
  thread:set("offset", counter * 97)
  counter = counter + 1
end

local i = 0
function request()
  i = i + 1
  return wrk.format("GET", paths[(i + (offset or 0)) % #paths + 1])
end

-- No response() hook: it would slow wrk down; errors.status counts statuses >= 400.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
