-- wrk script: POSTs pre-signed webhook payloads (from the webhook_payloads example), each thread
-- its own share of the file, so every request is a new event.
-- PAYLOADS=<file> wrk -s bench/webhook/signed.lua ...

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("PAYLOADS")
  local count = tonumber(os.getenv("THREADS") or "1")
  payloads = {}
  local n = 0
  for line in io.lines(path) do
    if n % count == id then
      local tab = string.find(line, "\t", 1, true)
      payloads[#payloads + 1] = { string.sub(line, 1, tab - 1), string.sub(line, tab + 1) }
    end
    n = n + 1
  end
  index = 0
  wrapped = 0
end

function request()
  index = index + 1
  if index > #payloads then
    index = 1
    wrapped = wrapped + 1
  end
  local p = payloads[index]
  return wrk.format("POST", "/whatsapp-call", {
    ["Content-Type"] = "application/json",
    ["X-Hub-Signature-256"] = p[1],
  }, p[2])
end

function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    "RESULT requests=%d duration_s=%.2f rps=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, errors))
end
