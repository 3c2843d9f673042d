-- A cache entry's value is "<version>:<body>", the body empty for a tombstone (an entry known
-- absent). This file is the format's one statement in Lua, as cqrs_site/core/codec.py's
-- value_text and value_decode are in Python: the Redis scripts that read entries
-- (reads/cache.py, reads/feeds.py) are sent with it in front (codec.ENTRY_VALUE_LUA), and
-- HAProxy's edge (deploy/edge.lua) loads it.

-- The version of a value, or of its first bytes (GETRANGE key 0 20: at most 19 digits and the
-- colon); nil if it has none, as for a missing key's ''. A Lua number: exact up to 2^53 - 1.
local function entry_version(value)
  return tonumber(string.match(value, '^(%d+):'))
end

-- The version's digits and the body of a value ('' for a tombstone); nil if it has no colon.
local function entry_split(value)
  local colon = string.find(value, ':', 1, true)
  if not colon then return nil end
  return string.sub(value, 1, colon - 1), string.sub(value, colon + 1)
end
