-- wrk's load for bench/run: builds or reads every request, paces it when a rate is given, counts
-- non-2xx replies itself, and prints one line for bench/driver.py to read.
--
-- Arguments, after wrk's own and a `--`:  MODE ARG RATE
--   MODE form  ARG is the body size in bytes: a JSON order update (450 bytes is the shipped
--              ecommstore form hook's case), padded with a "note" field to exactly ARG bytes;
--              every request's body differs (order id and sequence number).
--   MODE file  ARG is a file of pre-signed requests, one per line: the extra header lines
--              ("Name: value", separated from each other by the byte 0x01), a TAB, then the
--              body (JSON, so it holds no TAB or newline). Thread k of N sends lines
--              k, k+N, k+2N, ... so no line is sent twice; a thread that runs out stops sending
--              and counts it as "exhausted", which the driver reports as a failure.
--   RATE       0: closed loop (each connection sends its next request when the reply is read);
--              R > 0: requests are paced so that all threads together send R per second (each
--              thread keeps an absolute schedule, so a late request does not lower the rate),
--              still at most one request in flight per connection.
--
-- Latency is wrk's: from writing a request to reading its whole reply.

local threads = {}

function setup(thread)
   thread:set("thread_number", #threads)
   table.insert(threads, thread)
end

-- The monotonic clock in milliseconds, through LuaJIT's FFI (os.clock is CPU time).
local ffi = require("ffi")
ffi.cdef [[
struct bench_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clock_id, struct bench_timespec *tp);
]]
local timespec = ffi.new("struct bench_timespec")
local function now_ms()
   ffi.C.clock_gettime(1, timespec)
   return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local STATUSES = { "paid", "packed", "shipped", "delivered" }

local function order_body(n, size)
   local quantity = n % 5 + 1
   local body = string.format(
      '{"type":"order.updated","sequence":%d,"order":{"id":"ord_%012d","status":"%s",'
         .. '"updatedAt":"2026-06-01T12:%02d:%02dZ","customer":{"id":"cus_%06d","email":"customer%d@example.com",'
         .. '"name":"Customer %d"},"lines":[{"sku":"SKU-%04d","title":"Trail running shoes","quantity":%d,'
         .. '"unitPrice":12990}],"shipping":{"method":"ground","carrier":"DHL"},"total":%d,"currency":"EUR","note":"',
      n, n, STATUSES[n % 4 + 1], math.floor(n / 60) % 60, n % 60, n % 999983, n % 999983, n % 9973, n % 9973,
      quantity, quantity * 12990)
   local tail = '"}}'
   local pad = size - #body - #tail
   if pad < 0 then
      pad = 0
   end
   return body .. string.rep("x", pad) .. tail
end

function init(args)
   mode, arg, rate = args[1], args[2], tonumber(args[3] or "0")
   assert(mode == "form" or mode == "file", "MODE must be form or file, not " .. tostring(mode))
   head = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. tostring(wrk.port) .. "\r\n"
   counter = 0
   exhausted = 0
   non2xx = 0
   last_status = ""
   if mode == "form" then
      size = tonumber(arg)
      assert(size and size > 0, "form needs a body size")
      head = head .. "Content-Type: application/json\r\n"
   else
      requests = {}
      local thread_count = tonumber(os.getenv("BENCH_WRK_THREADS") or "1")
      local file = assert(io.open(arg, "rb"), "cannot open " .. arg)
      local index = 0
      for line in file:lines() do
         if index % thread_count == thread_number then
            local headers, body = line:match("^([^\t]*)\t(.*)$")
            assert(headers, "a request line without a TAB in " .. arg)
            headers = headers:gsub("\1", "\r\n")
            table.insert(requests, head .. "Content-Type: application/json\r\n" .. headers .. "\r\nContent-Length: "
               .. #body .. "\r\n\r\n" .. body)
         end
         index = index + 1
      end
      file:close()
      next_request = 1
   end
   if rate > 0 then
      -- Each thread sends its share of the rate on its own schedule.
      local thread_count = tonumber(os.getenv("BENCH_WRK_THREADS") or "1")
      interval_ms = 1000 * thread_count / rate
      next_due = now_ms()
   end
end

function delay()
   if mode == "file" and next_request > #requests then
      exhausted = 1
      return 3600 * 1000
   end
   if rate > 0 then
      local due = next_due
      next_due = next_due + interval_ms
      local wait = due - now_ms()
      if wait > 0 then
         return math.floor(wait)
      end
   end
   return 0
end

function request()
   if mode == "form" then
      counter = counter + 1
      local body = order_body(thread_number * 1000000000 + counter, size)
      return head .. "Content-Length: " .. #body .. "\r\n\r\n" .. body
   end
   local built = requests[next_request]
   if built == nil then
      -- wrk builds one request on its own before sending; past the end, repeat the last one
      -- (delay() keeps it from being sent).
      return requests[#requests]
   end
   next_request = next_request + 1
   return built
end

function response(status, _, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      last_status = status .. " " .. body:sub(1, 200):gsub("[\r\n\t\"\\]", " ")
   end
end

function done(summary, latency, _)
   local non2xx_total, exhausted_total, last = 0, 0, ""
   for _, thread in ipairs(threads) do
      non2xx_total = non2xx_total + thread:get("non2xx")
      exhausted_total = exhausted_total + thread:get("exhausted")
      local status = thread:get("last_status")
      if status and status ~= "" then
         last = status
      end
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH_WRK {"requests":%d,"duration_us":%d,"non2xx":%d,"exhausted":%d,"connect_errors":%d,'
         .. '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,'
         .. '"max_us":%d,"last_failure":"%s"}\n',
      summary.requests, summary.duration, non2xx_total, exhausted_total, errors.connect, errors.read,
      errors.write, errors.timeout, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
      latency.max, last))
end
