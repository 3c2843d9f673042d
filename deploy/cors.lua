-- CORS: which browser origins may call the API (deploy/haproxy.cfg answers preflights and sets
-- the response headers from the variable this sets).
--
-- CORS_ALLOWED_ORIGINS lists them, comma- or space-separated, each exactly as a browser sends
-- it ("https://app.example.com", "http://localhost:3000"); empty, the default, allows none. It
-- lives here rather than in Django because most API answers never reach Django middleware:
-- edge hits are answered by HAProxy and the read pool runs none.

local ALLOWED = {}
for origin in (os.getenv("CORS_ALLOWED_ORIGINS") or ""):gmatch("[^,%s]+") do
  ALLOWED[origin:lower()] = true
end

core.register_action("cors", { "http-req" }, function(txn)
  local values = txn.http:req_get_headers()["origin"]
  local origin = values and values[0]
  if origin and values[1] == nil and ALLOWED[origin:lower()] then
    txn:set_var("txn.cors_origin", origin)
  end
end)
