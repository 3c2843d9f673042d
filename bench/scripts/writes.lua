-- Writes through HAProxy with the bench's API token (BENCH_TOKEN_FILE): BENCH_WRITE is like,
-- patch or create, over the posts in BENCH_IDS (BENCH_HOT=1: every one to the first post).
package.path = "bench/scripts/?.lua;" .. package.path
require "common"

local kind, hot, token, author = os.getenv("BENCH_WRITE") or "like", os.getenv("BENCH_HOT") == "1", nil, nil
local n = 0

function init(args)
  load_ids(os.getenv("BENCH_IDS"))
  token = io.open(os.getenv("BENCH_TOKEN_FILE")):read("*l")
  author = os.getenv("BENCH_AUTHOR")
  math.randomseed(os.time() * 100 + id)
end

function request()
  n = n + 1
  local post = hot and ids[1] or ids[math.random(#ids)]
  local headers = { ["Authorization"] = "Token " .. token, ["Content-Type"] = "application/json" }
  if kind == "patch" then
    return wrk.format("PATCH", "/api/posts/" .. post, headers, '{"title":"Patched ' .. n .. '"}')
  elseif kind == "create" then
    return wrk.format("POST", "/api/posts", headers,
      '{"user_id":"' .. author .. '","title":"Bench ' .. n .. '","content":"Lorem ipsum dolor sit amet."}')
  end
  return wrk.format("POST", "/api/posts/" .. post .. "/like", headers)
end
