-- wrk script: POST /recommend for user ids cycling through 1..USERS (default 943, ml-100k).
--   USERS=943 wrk -t2 -c8 -d30s --latency -s bench/wrk_recommend.lua http://127.0.0.1:8080
-- (with a token: add -H "Authorization: Bearer $MOVREC_API_TOKEN")
local counter = 0
local users = tonumber(os.getenv("USERS") or "943")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = string.format('{"user_id": "%d", "k": 10}', (counter % users) + 1)
  return wrk.format(nil, "/recommend", nil, body)
end
