-- wrk script for bench/compare.py: one request shape per BENCH_MODE, cycling through the
-- signed samples in BENCH_SAMPLES (lines: public key, signed body, verify request, tab-separated).
local mode = os.getenv("BENCH_MODE")
local token = os.getenv("BENCH_TOKEN") or ""
local entries = {}
for line in io.lines(os.getenv("BENCH_SAMPLES")) do
  local public, body, verify, unknown, tampered = line:match("([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)")
  entries[#entries + 1] = { public = public, body = body, verify = verify, unknown = unknown, tampered = tampered }
end
local json = "application/json"
local counter = 0

function setup(thread)
  -- Seeded per run: unseeded, LuaJIT's generator gives every wrk process the same offset, so
  -- each round of `onboard` re-sent the previous round's codes instead of fresh ones.
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  thread:set("offset", math.random(1, 1000000))
end

request = function()
  counter = counter + 1
  local e = entries[(counter % #entries) + 1]
  if mode == "healthz" or mode == "upstream" or mode == "bare" then
    return wrk.format("GET", nil, nil, nil)
  elseif mode == "verify" then
    return wrk.format("POST", nil, { ["Content-Type"] = json, ["Authorization"] = "Bearer " .. token }, e.verify)
  elseif mode == "gateway" or mode == "nginx_proxy" then
    return wrk.format("GET", nil, { ["Content-Type"] = json, ["Authorization"] = "Bearer " .. e.public }, e.body)
  elseif mode == "unknown_key" then
    return wrk.format("POST", nil, { ["Content-Type"] = json, ["Authorization"] = "Bearer " .. e.unknown }, e.body)
  elseif mode == "bad_signature" then
    return wrk.format("POST", nil, { ["Content-Type"] = json, ["Authorization"] = "Bearer " .. e.public }, e.tampered)
  elseif mode == "onboard" then
    local code = string.format("ONB-%d-%d", offset or 0, counter)
    return wrk.format("POST", nil, { ["Content-Type"] = json },
      string.format('{"partner_code":"%s","email":"%s@onboard.example"}', code, code))
  end
  return wrk.format("POST", nil, { ["Content-Type"] = json, ["Authorization"] = "Bearer " .. e.public }, e.body)
end
