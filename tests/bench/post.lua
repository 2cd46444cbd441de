-- wrk script: POST the JSON body read from the file given after `--`, then print one
-- machine-readable line with the results (latencies in microseconds):
-- BENCHCSV,requests,duration_us,bytes,p50,p90,p99,p999,mean,max,status_errors,connect,read,write,timeout
-- `status_errors` is wrk's count of responses with an HTTP status >= 400.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
   local path = args[1]
   if path == nil then
      error("usage: wrk ... -s post.lua URL -- BODY_FILE")
   end
   local f = assert(io.open(path, "rb"))
   wrk.body = f:read("*a")
   f:close()
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCHCSV,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.1f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f\n",
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.mean, latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
