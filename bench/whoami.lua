-- wrk script: the same signed WhoAmI over and over (WhoAmI changes nothing, so a repeated
-- body is fine; the key, the signature and the database lookup are checked every time).
wrk.method = os.getenv("KEYWARD_METHOD") or "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEYWARD_PUBLIC_KEY")
wrk.body = os.getenv("KEYWARD_BODY")

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("requests %d, non-2xx or socket errors %d\n", summary.requests, errors))
end
