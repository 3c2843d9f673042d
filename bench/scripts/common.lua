-- Shared by the bench scripts: the ids to read, and a JSON summary printed at the end.
-- Each script sets `path_of(index)` and calls `pick()` its own way.

ids = {}
local threads = {}

function load_ids(file)
  for line in io.lines(file) do
    if #line > 0 then ids[#ids + 1] = line end
  end
end

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local function json_summary(summary, latency)
  local p = function(q) return latency:percentile(q) / 1000.0 end
  local errors = summary.errors
  local misses, hits, other = 0, 0, 0
  for _, thread in ipairs(threads) do
    misses = misses + (thread:get("misses") or 0)
    hits = hits + (thread:get("hits") or 0)
    other = other + (thread:get("other") or 0)
  end
  return string.format(
    '{"requests": %d, "duration_s": %.3f, "rps": %.1f, "errors": {"connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}, "latency_ms": {"mean": %.3f, "p50": %.3f, "p90": %.3f, "p99": %.3f, ' ..
    '"p999": %.3f, "max": %.3f}, "x_cache": {"hit": %d, "miss": %d, "other": %d}}',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.mean / 1000.0, p(50), p(90), p(99), p(99.9), latency.max / 1000.0, hits, misses, other)
end

function done(summary, latency, requests)
  io.write("BENCH-JSON " .. json_summary(summary, latency) .. "\n")
end
