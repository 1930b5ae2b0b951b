-- wrk's load for benches/ingest.rs: builds every request, stops sending at the deadline, and
-- prints what it counted as one line for the bench to read.
--
-- Arguments, after wrk's own and a `--`:  SCENARIO RUN SECONDS
--   SCENARIO  form_json (an order update of about 300 bytes of JSON) or stripe_signed (a Stripe
--             event signed with Stripe-Signature, the signature computed per request, as Stripe
--             does it)
--   RUN       probe, warmup or measure; part of every Stripe event id, so no two runs repeat one
--   SECONDS   how long to send. After that each connection reads the reply it waits for and sends
--             nothing more, so wrk (started with a longer -d) ends with no request in flight and
--             every request sent has been answered: the bench checks that, then compares the
--             replies with what the server stored.
-- A probe sends one request, and prints its reply's status and body.
--
-- Several nodes: when HOOKGATE_BENCH_WRK_ADDRESSES lists "host:port" addresses (space-separated),
-- wrk's threads take them in turn, each thread's connections going to its address, so one wrk
-- spreads the load over the nodes and reports one latency distribution for all of them. The
-- bench makes the thread count a multiple of the nodes', so each node gets the same share.
--
-- Every request carries a different body (and, for Stripe, event id), built from the thread's
-- number and a per-thread counter, so duplicate detection never short-circuits.
--
-- The load generator shares the machine's cores with the server it loads, and it costs more per
-- request at the baseline's higher rate, so the script keeps its own work small: requests are
-- built as one string, and the HMAC is SHA-256 from OpenSSL's libcrypto (which wrk links), called
-- through LuaJIT's FFI from key states computed once.

local ffi = require("ffi")
local bit = require("bit")
ffi.cdef [[
typedef struct { unsigned int h[8]; unsigned int Nl, Nh; unsigned int data[16]; unsigned int num, md_len; } SHA256_CTX;
int SHA256_Init(SHA256_CTX *c);
int SHA256_Update(SHA256_CTX *c, const void *data, size_t len);
int SHA256_Final(unsigned char *md, SHA256_CTX *c);
struct hookgate_bench_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clock_id, struct hookgate_bench_timespec *tp);
]]

-- The Stripe endpoint secret of the bench's hook definition (BENCH_STRIPE_SECRET in ingest.rs).
local STRIPE_SECRET = "whsec_bench_secret"
local CLOCK_MONOTONIC = 1
-- What delay() answers once the deadline has passed: longer than any run.
local NEVER_MS = 3600 * 1000

-- Setup environment (wrk's main thread): every thread, to read its counters in done().
local threads = {}
-- The nodes' addresses, looked up at the first setup() (nil: wrk's own address for every thread).
local addresses = nil

local function node_addresses()
   local listed = os.getenv("HOOKGATE_BENCH_WRK_ADDRESSES")
   if not listed or listed == "" then
      return {}
   end
   local found = {}
   for host, port in listed:gmatch("([^%s:]+):(%d+)") do
      local resolved = wrk.lookup(host, port)
      assert(resolved and #resolved > 0, "cannot resolve " .. host .. ":" .. port)
      table.insert(found, resolved[1])
   end
   assert(#found > 0, "HOOKGATE_BENCH_WRK_ADDRESSES holds no host:port: " .. listed)
   return found
end

function setup(thread)
   addresses = addresses or node_addresses()
   if #addresses > 0 then
      thread.addr = addresses[#threads % #addresses + 1]
   end
   thread:set("thread_number", #threads)
   table.insert(threads, thread)
end

-- Running environment (one per wrk thread).
local timespec = ffi.new("struct hookgate_bench_timespec")
local function now()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
   return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) / 1e9
end

-- HMAC-SHA256 (RFC 2104) of messages under one key: SHA-256 states after the key's inner and
-- outer pads, copied for each message.
local function hmac_sha256_hex_under(key)
   assert(#key <= 64, "keys longer than a block are hashed first; the bench's is not")
   local inner_pad, outer_pad = {}, {}
   for i = 1, 64 do
      local byte = i <= #key and key:byte(i) or 0
      inner_pad[i] = string.char(bit.bxor(byte, 0x36))
      outer_pad[i] = string.char(bit.bxor(byte, 0x5c))
   end
   local inner_start, outer_start = ffi.new("SHA256_CTX"), ffi.new("SHA256_CTX")
   ffi.C.SHA256_Init(inner_start)
   ffi.C.SHA256_Update(inner_start, table.concat(inner_pad), 64)
   ffi.C.SHA256_Init(outer_start)
   ffi.C.SHA256_Update(outer_start, table.concat(outer_pad), 64)
   local context, digest = ffi.new("SHA256_CTX"), ffi.new("unsigned char[32]")
   local hex, digits = ffi.new("char[64]"), "0123456789abcdef"
   local digit = {}
   for i = 0, 15 do
      digit[i] = digits:byte(i + 1)
   end
   return function(message)
      ffi.copy(context, inner_start, ffi.sizeof("SHA256_CTX"))
      ffi.C.SHA256_Update(context, message, #message)
      ffi.C.SHA256_Final(digest, context)
      ffi.copy(context, outer_start, ffi.sizeof("SHA256_CTX"))
      ffi.C.SHA256_Update(context, digest, 32)
      ffi.C.SHA256_Final(digest, context)
      for i = 0, 31 do
         hex[2 * i] = digit[bit.rshift(digest[i], 4)]
         hex[2 * i + 1] = digit[bit.band(digest[i], 15)]
      end
      return ffi.string(hex, 64)
   end
end
local stripe_hmac = hmac_sha256_hex_under(STRIPE_SECRET)

local STATUSES = { "paid", "packed", "shipped", "delivered" }

-- An order update of about 300 bytes whose fields vary with n.
local function order_update(n)
   local quantity = n % 5 + 1
   return string.format(
      '{"type":"order.updated","sequence":%d,"order":{"id":"ord_%012d","status":"%s",'
         .. '"updatedAt":"2025-06-01T12:%02d:%02dZ","customer":{"id":"cus_%06d","email":"customer%d@example.com"},'
         .. '"lines":[{"sku":"SKU-%04d","quantity":%d,"unitPrice":1999}],"shipping":"ground","total":%d,"currency":"USD"}}',
      n, n, STATUSES[n % 4 + 1], math.floor(n / 60) % 60, n % 60, n % 9973, n % 9973, n % 997, quantity,
      quantity * 1999)
end

function init(args)
   scenario, run, seconds = args[1], args[2], tonumber(args[3])
   assert(scenario == "form_json" or scenario == "stripe_signed", "unknown scenario " .. tostring(scenario))
   assert(run == "probe" or run == "warmup" or run == "measure", "unknown run " .. tostring(run))
   assert(seconds and seconds > 0, "SECONDS must be a positive number")
   deadline = now() + seconds
   sent = 0
   built = 0
   head = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.host .. ":" .. tostring(wrk.port)
      .. "\r\nContent-Type: application/json\r\n"
   if run == "probe" then
      -- Defined only for the probe: with a response() wrk reads every reply's headers and body.
      function response(status, _, body)
         reply_status = status
         reply_body = body
      end
   end
end

-- wrk asks delay() before every request, and each 0 it answers is followed by one request()
-- and its write, so this is where requests are counted: wrk also calls request() once on its
-- own, to check the script, and that one is never sent.
function delay()
   local more = run == "probe" and sent == 0 or run ~= "probe" and now() < deadline
   if more then
      sent = sent + 1
      return 0
   end
   return NEVER_MS
end

function request()
   built = built + 1
   -- Unique within a run: at most 10^9 requests per thread.
   local n = thread_number * 1000000000 + built
   if scenario == "form_json" then
      local body = order_update(n)
      return head .. "Content-Length: " .. #body .. "\r\n\r\n" .. body
   end
   local body = '{"id":"evt_bench_' .. run .. "_" .. n .. '","object":"event","type":"payment_intent.succeeded",'
      .. '"data":{"object":' .. order_update(n) .. "}}"
   local timestamp = os.time()
   local signature = stripe_hmac(timestamp .. "." .. body)
   return head .. "Stripe-Signature: t=" .. timestamp .. ",v1=" .. signature .. "\r\nContent-Length: " .. #body
      .. "\r\n\r\n" .. body
end

-- Setup environment again: one line for the bench, after wrk's own report.
function done(summary, latency, _)
   local sent_total = 0
   local reply = ""
   for _, thread in ipairs(threads) do
      sent_total = sent_total + thread:get("sent")
      local status = thread:get("reply_status")
      if status then
         local body = (thread:get("reply_body") or ""):gsub("[\r\n]", " ")
         reply = status .. " " .. body
      end
   end
   local errors = summary.errors
   io.write(string.format(
      "HOOKGATE_BENCH_WRK {\"sent\":%d,\"completed\":%d,\"status_errors\":%d,\"connect_errors\":%d,"
         .. "\"read_errors\":%d,\"write_errors\":%d,\"timeouts\":%d,\"p50_us\":%d,\"p90_us\":%d,"
         .. "\"p99_us\":%d,\"max_us\":%d,\"mean_us\":%.1f}\n",
      sent_total, summary.requests, errors.status, errors.connect, errors.read, errors.write, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
   if reply ~= "" then
      io.write("HOOKGATE_BENCH_REPLY " .. reply .. "\n")
   end
end
