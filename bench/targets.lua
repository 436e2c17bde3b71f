-- wrk script for bench/compare.py: one request shape per BENCH_MODE, cycling through the
-- signed samples in BENCH_SAMPLES (lines: public key, signed body, verify request, tab-separated).
local mode = os.getenv("BENCH_MODE")
local token = os.getenv("BENCH_TOKEN") or ""
local entries = {}
for line in io.lines(os.getenv("BENCH_SAMPLES")) do
  local public, body, verify, unknown, tampered = line:match("([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)")
  entries[#entries + 1] = { public = public, body = body, verify = verify, unknown = unknown, tampered = tampered }
end
-- gateway_single_use: bodies that all differ (bench-fill --single-use), each sent once: this
-- run takes BENCH_LIMIT of them after the BENCH_SKIP that earlier runs used.
local single_use = {}
if mode == "gateway_single_use" then
  local skip, limit, n = tonumber(os.getenv("BENCH_SKIP")), tonumber(os.getenv("BENCH_LIMIT")), 0
  for line in io.lines(os.getenv("BENCH_SINGLE_USE")) do
    n = n + 1
    if n > skip + limit then break end
    if n > skip then
      local public, body = line:match("([^\t]*)\t([^\t]*)")
      single_use[#single_use + 1] = { public = public, body = body }
    end
  end
end
local json = "application/json"
local counter = 0

function setup(thread)
  -- Seeded per run: unseeded, LuaJIT's generator gives every wrk process the same offset, so
  -- each round of `onboard` re-sent the previous round's codes instead of fresh ones.
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  thread:set("offset", math.random(1, 1000000))
end

-- The request of one sample in this mode; nil for the modes built per request.
local function format(e)
  if mode == "healthz" or mode == "upstream" or mode == "bare" then
    return wrk.format("GET", nil, nil, nil)
  elseif mode == "verify" then
    return wrk.format("POST", nil, { ["Content-Type"] = json, ["Authorization"] = "Bearer " .. token }, e.verify)
  elseif mode == "gateway" or mode == "nginx_proxy" or mode == "bare_proxy" then
    return wrk.format("GET", nil, { ["Content-Type"] = json, ["Authorization"] = "Bearer " .. e.public }, e.body)
  elseif mode == "unknown_key" then
    return wrk.format("POST", nil, { ["Content-Type"] = json, ["Authorization"] = "Bearer " .. e.unknown }, e.body)
  elseif mode == "bad_signature" then
    return wrk.format("POST", nil, { ["Content-Type"] = json, ["Authorization"] = "Bearer " .. e.public }, e.tampered)
  elseif mode == "onboard" or mode == "gateway_single_use" then
    return nil
  end
  return wrk.format("POST", nil, { ["Content-Type"] = json, ["Authorization"] = "Bearer " .. e.public }, e.body)
end

-- Every request that can be is built once, here (after wrk has set the Host header), as wrk's
-- SCRIPTING advises: built in request(), a signed request cost wrk ~2 µs more of its own CPU
-- than a GET, on the cores it shares with the server, so the load generator's own work leaked
-- into the ratios between targets.
local prebuilt = {}
function init(args)
  for i, e in ipairs(entries) do
    prebuilt[i] = format(e)
  end
end

request = function()
  counter = counter + 1
  local ready = prebuilt[(counter % #entries) + 1]
  if ready then
    return ready
  elseif mode == "gateway_single_use" then
    -- Past the last body it starts again: the repeats are refused (409) and counted as errors.
    local u = single_use[((counter - 1) % #single_use) + 1]
    return wrk.format("POST", nil, { ["Content-Type"] = json, ["Authorization"] = "Bearer " .. u.public }, u.body)
  end
  -- onboard: a fresh partner code and email every time.
  local code = string.format("ONB-%d-%d", offset or 0, counter)
  return wrk.format("POST", nil, { ["Content-Type"] = json },
    string.format('{"partner_code":"%s","email":"%s@onboard.example"}', code, code))
end
