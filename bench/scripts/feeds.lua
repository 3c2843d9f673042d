-- Pages of the feeds: a user's posts (users from BENCH_USERS), the latest and the most liked,
-- 20 posts a page, first pages and next pages alike (the next page's path taken from an earlier
-- answer's Link header: wrk interleaves a thread's connections, so an answer is not matched to
-- the request that asked for it). With BENCH_FRESH=1 each asks for MongoDB's page
-- (Cache-Control: no-cache): the feeds' misses.
package.path = "bench/scripts/?.lua;" .. package.path
require "common"

local users, next_pages = {}, {}
local fresh = os.getenv("BENCH_FRESH") == "1"
hits, misses, other = 0, 0, 0

function init(args)
  for line in io.lines(os.getenv("BENCH_USERS")) do if #line > 0 then users[#users + 1] = line end end
  math.randomseed(os.time() * 100 + id)
end

local function path()
  local roll = math.random(3)
  local base = roll == 1 and "/api/posts?order=latest&limit=20" or roll == 2 and "/api/posts?order=top&limit=20"
    or ("/api/users/" .. users[math.random(#users)] .. "/posts?limit=20")
  local next_page = next_pages[base]
  if next_page and math.random(2) == 1 then return next_page end
  return base
end

function request()
  return wrk.format("GET", path(), fresh and { ["Cache-Control"] = "no-cache" } or nil)
end

function response(status, headers, body)
  local cache = headers["X-Cache"] or headers["x-cache"]
  if cache == "miss" then misses = misses + 1 elseif cache == "hit" then hits = hits + 1 else other = other + 1 end
  wrk.thread:set("hits", hits); wrk.thread:set("misses", misses); wrk.thread:set("other", other)
  local link = (headers["Link"] or headers["link"] or ""):match("<([^>]+)>")
  if link then
    local base = link:gsub("&cursor=[^&]*", "")
    if not next_pages[base] then next_pages[base] = link end  -- the second page of each feed
  end
end
