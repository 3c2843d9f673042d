-- GET /api/posts/{id}, each id once: thread k of n walks its own slice of BENCH_IDS in order and
-- stops at its end, so with the cache emptied before the pass every read is a miss. Counts the
-- X-Cache answers to show it.
package.path = "bench/scripts/?.lua;" .. package.path
require "common"

local next_index, last_index
hits, misses, other = 0, 0, 0

function init(args)
  load_ids(os.getenv("BENCH_IDS"))
  local count = tonumber(os.getenv("BENCH_THREADS"))
  local slice = math.floor(#ids / count)
  next_index = id * slice + 1
  last_index = next_index + slice - 1
end

function request()
  if next_index > last_index then
    wrk.thread:stop()
    next_index = last_index  -- requests already queued repeat the last id; counted as such
  end
  local path = "/api/posts/" .. ids[next_index]
  next_index = next_index + 1
  return wrk.format("GET", path)
end

function response(status, headers, body)
  local cache = headers["X-Cache"] or headers["x-cache"]
  if cache == "miss" then misses = misses + 1 elseif cache == "hit" then hits = hits + 1 else other = other + 1 end
  wrk.thread:set("hits", hits); wrk.thread:set("misses", misses); wrk.thread:set("other", other)
end
