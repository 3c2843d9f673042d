-- Cache hits answered by HAProxy itself, from the same Redis entries the read pool serves.
--
-- A GET of one user, post or post's likes (the entry routes of cqrs_site/core/routes.py,
-- generated into deploy/edge_routes.lua) reads its entry with one Redis GET and, when the entry is a hit,
-- sets the variables the `edge_hits` backend answers from (deploy/haproxy.cfg). Anything else
-- sets nothing and falls through to the read pool, unchanged: a miss, a tombstone, an entry
-- older than X-Min-Version asks for, a malformed header, Redis unreachable or slower than
-- EDGE_REDIS_TIMEOUT_MS, a body too large for HAProxy's buffer, a Host not allowed.
--
-- It reads the cache's format with the Lua the Redis scripts are sent with
-- (cqrs_site/core/entry_value.lua: "<version>:<body>", an empty body a tombstone) and speaks the
-- API's validators (cqrs_site/core/http.py: the strong ETag "<version>", RFC 9110 If-None-Match,
-- X-Min-Version); tests/e2e/test_edge.py holds the two to each other.
--
-- On a Redis Cluster (REDIS_TOPOLOGY=cluster) it routes each GET by the key's slot: CRC16 as
-- Redis computes it, a slot map from CLUSTER SLOTS (asked of REDIS_CLUSTER_NODES), MOVED and ASK
-- followed once, and the map asked again after a MOVED or a node that does not answer; a slot
-- whose primary is down falls through to the pool until the map names its new primary.
--
-- HAProxy 2.6's Lua cannot keep a connection across requests, so each hit opens one and asks
-- Redis to close it (QUIT after the GET). Over Redis's unix socket (EDGE_REDIS_SOCKET, same
-- host) that costs no TCP state at all; over TCP the TIME_WAIT that closing leaves is Redis's,
-- on its own port, not one of HAProxy's ephemeral ports per hit (both measured in `make bench`).

local lua_dir = os.getenv("EDGE_LUA_DIR") or "deploy"
local routes = dofile(lua_dir .. "/edge_routes.lua")
-- The value format's one statement in Lua: a file of local functions, as the Redis scripts take it.
local entry_split = (function()
  local file = assert(io.open(lua_dir .. "/../cqrs_site/core/entry_value.lua"))
  local source = file:read("*a")
  file:close()
  return assert(load(source .. "\nreturn entry_split", "entry_value.lua"))()
end)()

local function redis_address(url)
  -- redis://[:password@]host:port[/db]
  local rest = url:gsub("^rediss?://", "")
  local auth, hostport = rest:match("^([^@]*)@(.*)$")
  hostport = hostport or rest
  local host, port, db = hostport:match("^([^:/]+):?(%d*)/?(%d*)")
  local password = auth and auth:match(":(.*)$") or (auth ~= "" and auth) or nil
  return host or "127.0.0.1", tonumber(port) or 6379, tonumber(db) or 0, password
end

-- A number from the environment, the default when unset or empty. Anything else stops HAProxy
-- at start with the variable's name (as the app's settings refuse a bad value), rather than
-- running on a default nobody chose.
local function number_setting(name, default, low, high)
  local raw = os.getenv(name)
  if raw == nil or raw == "" then return default end
  local value = tonumber(raw)
  if value == nil or value < low or value > high then
    error(string.format("%s=%q: expected a number from %s to %s", name, raw, low, high), 0)
  end
  return value
end

-- The Redis it reads: EDGE_REDIS_URL, else REDIS_URL. Under Sentinel, a replica on this host
-- (any node answers GET; one behind an X-Min-Version falls through to the pool).
local function setting_or(name, default)
  local value = os.getenv(name)
  if value == nil or value == "" then return default end
  return value
end
local HOST, PORT, DB, PASSWORD = redis_address(
  setting_or("EDGE_REDIS_URL", setting_or("REDIS_URL", "redis://127.0.0.1:6380/0"))
)
-- Redis's unix socket, when it runs on this host (deploy/processes.py sets it for the embedded
-- one): no TCP handshake per hit and no TIME_WAIT, about 1.5x the hits per second (measured).
local SOCKET = os.getenv("EDGE_REDIS_SOCKET")
if SOCKET == "" then SOCKET = nil end
local PREFIX = os.getenv("CQRS_CACHE_PREFIX") or "cqrs"
local TIMEOUT = number_setting("EDGE_REDIS_TIMEOUT_MS", 20, 1, 10000) / 1000
-- The share of edge hits that get an access log line, in percent (0-100; misses, writes and
-- errors always get theirs). Hits are counted exactly either way, by HAProxy's exporter. A line
-- per hit cost 16-30% of the edge's throughput in `make up` while supervisor relayed HAProxy's
-- stdout (measured in `make bench`: "edge hits, every hit logged"; it now writes to its file).
local LOG_PERCENT = number_setting("EDGE_HIT_LOG_PERCENT", 1, 0, 100)
-- What fits HAProxy's buffer (tune.bufsize 16384) beside the headers; a larger body falls through.
local MAX_BODY = number_setting("EDGE_MAX_BODY_BYTES", 15000, 0, 16384)

local ALLOWED_HOSTS = {}
for host in (os.getenv("DJANGO_ALLOWED_HOSTS") or "127.0.0.1,localhost,[::1]"):gmatch("[^,%s]+") do
  ALLOWED_HOSTS[#ALLOWED_HOSTS + 1] = host:lower()
end

-- Django's host validation: an exact name, ".example.com" for it and its subdomains, "*" for any.
local function host_allowed(header)
  if not header then return false end
  local host = header:lower():gsub(":%d+$", "")
  for _, allowed in ipairs(ALLOWED_HOSTS) do
    if allowed == "*" or allowed == host then return true end
    if allowed:sub(1, 1) == "." and (host == allowed:sub(2) or host:sub(-#allowed) == allowed) then return true end
  end
  return false
end

local function command(...)
  local parts = { "*" .. select("#", ...) .. "\r\n" }
  for _, argument in ipairs({ ... }) do
    parts[#parts + 1] = "$" .. #argument .. "\r\n" .. argument .. "\r\n"
  end
  return table.concat(parts)
end

-- A cluster's nodes: where to ask for the slot map, and each node's unix socket on this host
-- (EDGE_REDIS_SOCKETS: "host:port=/path,..."), used instead of TCP.
local CLUSTER = os.getenv("REDIS_TOPOLOGY") == "cluster"
local SEEDS, SOCKETS = {}, {}
for address in (os.getenv("REDIS_CLUSTER_NODES") or ""):gmatch("[^,%s]+") do SEEDS[#SEEDS + 1] = address end
for address, path in (os.getenv("EDGE_REDIS_SOCKETS") or ""):gmatch("([^,=%s]+)=([^,%s]+)") do SOCKETS[address] = path end

-- A connection to one server: the configured one (address nil), or a cluster node "host:port".
local function connect(address)
  local socket = core.tcp()
  socket:settimeout(TIMEOUT)
  local connected
  local path = (address and SOCKETS[address]) or (not address and SOCKET)
  if path then
    connected = socket:connect("unix@" .. path, 0)
  elseif address then
    local host, port = address:match("^(.*):(%d+)$")
    connected = host and socket:connect(host, tonumber(port))
  else
    connected = socket:connect(HOST, PORT)
  end
  if not connected then socket:close() return nil end
  return socket
end

-- One GET, Redis closing the connection after it (ASKING first when `asking`). Returns the
-- value; nil for a miss; nil, "MOVED"|"ASK", "host:port" for a redirection; nil, "DOWN" when the
-- server did not answer (the read pool answers every one of these but a redirection).
local function redis_get(key, address, asking)
  local socket = connect(address)
  if not socket then return nil, "DOWN" end
  local request, replies = "", 1
  if PASSWORD then request, replies = request .. command("AUTH", PASSWORD), replies + 1 end
  if DB ~= 0 and not address then request, replies = request .. command("SELECT", tostring(DB)), replies + 1 end
  if asking then request, replies = request .. command("ASKING"), replies + 1 end
  if not socket:send(request .. command("GET", key) .. command("QUIT")) then
    socket:close()
    return nil, "DOWN"
  end
  for _ = 2, replies do
    local status = socket:receive("*l")
    if not status or status:sub(1, 1) ~= "+" then socket:close() return nil, "DOWN" end
  end
  local head = socket:receive("*l")
  if not head then socket:close() return nil, "DOWN" end
  if head:sub(1, 1) == "-" then
    socket:close()
    local kind, target = head:match("^%-(%u+) %d+ (%S+)$")
    if kind == "MOVED" or kind == "ASK" then return nil, kind, target end
    return nil, "DOWN"  -- CLUSTERDOWN, TRYAGAIN, LOADING...
  end
  local size = head:sub(1, 1) == "$" and tonumber(head:sub(2))
  local value = size and size >= 0 and socket:receive(size + 2)
  socket:close()
  return value and value:sub(1, size) or nil
end

-- Redis Cluster's key hash: CRC16 (XMODEM) of the key's hash tag (or of the key), mod 16384.
local CRC16 = {}
for byte = 0, 255 do
  local crc = byte << 8
  for _ = 1, 8 do
    crc = (crc & 0x8000 ~= 0) and (((crc << 1) ~ 0x1021) & 0xFFFF) or ((crc << 1) & 0xFFFF)
  end
  CRC16[byte] = crc
end

local function key_slot(key)
  local open = key:find("{", 1, true)
  if open then
    local close = key:find("}", open + 1, true)
    if close and close > open + 1 then key = key:sub(open + 1, close - 1) end
  end
  local crc = 0
  for index = 1, #key do
    crc = ((crc << 8) & 0xFFFF) ~ CRC16[((crc >> 8) ~ key:byte(index)) & 0xFF]
  end
  return crc & 0x3FFF
end

-- One RESP reply, arrays nested (CLUSTER SLOTS); nil on an error or a broken connection.
local function read_reply(socket)
  local line = socket:receive("*l")
  if not line then return nil end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "*" then
    local items = {}
    for index = 1, tonumber(rest) do
      items[index] = read_reply(socket)
      if items[index] == nil then return nil end
    end
    return items
  elseif kind == "$" then
    local size = tonumber(rest)
    if size < 0 then return false end
    local data = socket:receive(size + 2)
    return data and data:sub(1, size)
  elseif kind == ":" then
    return tonumber(rest)
  elseif kind == "+" then
    return rest
  end
  return nil
end

-- The slot map (slot -> "host:port" of its primary), per Lua state, asked of the first node that
-- answers CLUSTER SLOTS; at most every REFRESH_SECONDS, however many requests find it wrong.
local SLOTS, refreshed_at, REFRESH_SECONDS = {}, -1, 0.1
local function now()
  local time = core.now()
  return time.sec + time.usec / 1e6
end

local function refresh_slots()
  if now() - refreshed_at < REFRESH_SECONDS then return end
  refreshed_at = now()
  local known = {}
  for _, address in ipairs(SEEDS) do known[#known + 1] = address end
  for _, address in pairs(SLOTS) do known[#known + 1] = address end
  for _, address in ipairs(known) do
    local socket = connect(address)
    if socket then
      local ranges = socket:send(command("CLUSTER", "SLOTS") .. command("QUIT")) and read_reply(socket)
      socket:close()
      if type(ranges) == "table" and #ranges > 0 then
        local slots = {}
        for _, range in ipairs(ranges) do
          local primary = range[3]
          for slot = range[1], range[2] do slots[slot] = primary[1] .. ":" .. primary[2] end
        end
        SLOTS = slots
        return
      end
    end
  end
end

-- A cluster's GET: to the slot's primary, following one MOVED or ASK.
local function cluster_get(key)
  local slot = key_slot(key)
  if SLOTS[slot] == nil then refresh_slots() end
  local address = SLOTS[slot]
  if not address then return nil end
  local value, failure, target = redis_get(key, address)
  if failure == "MOVED" then
    SLOTS[slot] = target
    refresh_slots()
    value, failure = redis_get(key, target)
  elseif failure == "ASK" then
    value, failure = redis_get(key, target, true)
  end
  if failure == "DOWN" then refresh_slots() end
  return value
end

-- RFC 9110 13.1.2, weak comparison: "*", or any listed tag, W/ or not, that is the version.
local function none_match(header, version)
  if not header then return false end
  if header:match("^%s*%*%s*$") then return true end
  local position, length, found = 1, #header, false
  while position <= length do
    local _, finish, weak, opaque = header:find('^%s*([W/]*)"([^"]*)"%s*', position)
    if not finish or (weak ~= "" and weak ~= "W/") or opaque:find("[%z\1-\32\127]") then return false end
    if opaque == version then found = true end
    position = finish + 1
    if position <= length then
      if header:sub(position, position) ~= "," then return false end
      position = position + 1
    end
  end
  return found
end

local function is_version(raw)
  return raw:match("^%d+$") ~= nil and #raw <= 18
end

core.register_action("edge_hit", { "http-req" }, function(txn)
  local path = txn.sf:path()
  local key
  for _, route in ipairs(routes) do
    local id = path:match(route.pattern)
    if id then
      key = PREFIX .. ":" .. route.key:format(id)
      break
    end
  end
  if not key then return end
  local headers = txn.http:req_get_headers()
  local function header(name)  -- repeated lines joined with commas, as WSGI servers join them
    local values = headers[name]
    if not values then return nil end
    local joined = {}
    for index = 0, #values do joined[#joined + 1] = values[index] end
    return table.concat(joined, ",")
  end
  if not host_allowed(header("host")) then return end
  local minimum = header("x-min-version")
  if minimum and not is_version(minimum) then return end
  local value
  if CLUSTER then value = cluster_get(key) else value = redis_get(key) end
  if not value then return end
  local version, body = entry_split(value)
  if not version or body == "" or #body > MAX_BODY or not is_version(version) then return end
  if minimum and tonumber(version) < tonumber(minimum) then return end
  txn:set_var("txn.edge_etag", '"' .. version .. '"')
  if LOG_PERCENT >= 100 or math.random() * 100 < LOG_PERCENT then txn:set_var("txn.edge_logged", true) end
  if none_match(header("if-none-match"), version) then
    txn:set_var("txn.edge_not_modified", true)
  else
    txn:set_var("txn.edge_body", body)
  end
end, 0)
