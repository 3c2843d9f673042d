-- GET /api/posts/{id} over the ids in BENCH_IDS: uniform, or Zipf-skewed (BENCH_DIST=zipf,
-- exponent BENCH_ZIPF_S, default 1.0: the first ids are the hot ones).
package.path = "bench/scripts/?.lua;" .. package.path
require "common"

local dist = os.getenv("BENCH_DIST") or "uniform"
local cdf = {}

function init(args)
  load_ids(os.getenv("BENCH_IDS"))
  math.randomseed(os.time() * 100 + id)
  if dist == "zipf" then
    local s, total = tonumber(os.getenv("BENCH_ZIPF_S") or "1.0"), 0
    for rank = 1, #ids do total = total + 1 / rank ^ s; cdf[rank] = total end
    for rank = 1, #ids do cdf[rank] = cdf[rank] / total end
  end
end

local function zipf_index()
  local u, lo, hi = math.random(), 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end

function request()
  local index = dist == "zipf" and zipf_index() or math.random(#ids)
  return wrk.format("GET", "/api/posts/" .. ids[index])
end

-- BENCH_RATE (requests/s over all connections): each connection paces itself (the mixed scenario).
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
if rate > 0 then
  function delay() return 1000 * tonumber(os.getenv("BENCH_CONNECTIONS")) / rate end
end
