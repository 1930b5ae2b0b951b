#!/usr/bin/env python3
"""The scenarios of bench/run: starts each server as a process of its own, loads it from outside
with wrk (bench/load.lua) or Postfix's smtp-source, reads its CPU time and peak RSS from /proc,
and writes the results as Markdown, JSON and an SVG chart into bench/results/.

bench/run installs the tools and builds the binaries, then runs this with the same options;
run `bench/run --help` for them. Standard library only.
"""

import argparse
import resource
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import chart

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOAD_SCRIPT = ROOT / "bench" / "load.lua"
RELEASE = ROOT / "target" / "release"
HOOKGATE = Path(os.environ.get("HOOKGATE_BENCH_BINARY", RELEASE / "hookgate"))
LIMIT = RELEASE / "examples" / "bench_limit"
STORAGE = RELEASE / "examples" / "bench_storage"

FORM_EVENT = "kustomer.app.ecommstore.order.update"
FORM_BODY_BYTES = 450
STRIPE_SECRET = "whsec_bench_" + uuid.uuid4().hex
GITHUB_SECRET = "ghbench_" + uuid.uuid4().hex
ADMIN_TOKEN = "bench_admin_" + uuid.uuid4().hex
SECRETS_KEY = uuid.uuid4().hex + uuid.uuid4().hex
CONNECTIONS = 64
FIXED_RATE = 5000
SWEEP_CONNECTIONS = [1, 4, 16, 64, 256]
SWEEP_KIB = [1, 4, 16, 64, 256]
SMTP_SESSIONS = 16
SMTP_ROWS = ("smtp-hookgate", "smtp-sink", "postfix")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# wrk's threads: 1 by default, as the issue's own measurement (`wrk -t1 -c64`), so the generator
# takes at most one of the two cores; --wrk-threads changes it.
WRK_THREADS = [1]
# Pre-signed requests written per second of a run: a run that sends more stops and fails loudly.
SIGNED_PER_SECOND = int(os.environ.get("HOOKGATE_BENCH_SIGNED_PER_SEC", "30000"))


# 2xx replies wrk counted since the last reset: what a store must hold at least afterwards.
ANSWERED = {"2xx": 0}


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Failure(Exception):
    """A scenario that could not be measured, or whose load saw errors."""


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


class Server:
    """A measured process: started, its announced address read from stdout, killed at the end."""

    def __init__(self, name, argv, announce, env=None, cwd=None, log_dir=None):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log = open(self.log_path, "wb")
        merged = dict(os.environ)
        merged.update(env or {})
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, env=merged, cwd=cwd
        )
        self.lines = []
        self.address = None
        if announce is not None:
            self.address = self.wait_for(announce)

    def wait_for(self, pattern, timeout=30):
        deadline = time.time() + timeout
        regex = re.compile(pattern)
        while time.time() < deadline:
            line = self.process.stdout.readline()
            if not line:
                if self.process.poll() is not None:
                    break
                continue
            text = line.decode(errors="replace").strip()
            self.lines.append(text)
            match = regex.search(text)
            if match:
                return match.group(1)
        self.kill()
        raise Failure(f"{self.name} did not print /{pattern}/ (it printed {self.lines!r}; see {self.log_path})")

    @property
    def pid(self):
        return self.process.pid

    def kill(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.log.close()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise Failure(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def cpu_seconds(pids):
    """utime + stime of the processes and of their waited-for children (webhook's commands)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # a process that ended meanwhile (its parent's children time has it)
        # After the name: state is fields[0]; utime, stime, cutime, cstime are fields 11..14.
        total += sum(int(value) for value in fields[11:15])
    return total / CLOCK_TICKS


def reset_peak_rss(pid):
    # Writing 5 to clear_refs resets VmHWM (Linux 4.0+), so each run's peak is its own.
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def http(method, url, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read() or b"null")


# ---------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------


def wrk(url, mode, arg, connections, seconds, rate=0):
    """Runs wrk with bench/load.lua; returns its counts. Any failed request raises Failure."""
    threads = min(WRK_THREADS[0], connections)
    argv = [
        "wrk", "--threads", str(threads), "--connections", str(connections), "--duration", f"{seconds}s",
        "--timeout", "10s", "--latency", "--script", str(LOAD_SCRIPT), url, "--", mode, str(arg), str(rate),
    ]
    env = dict(os.environ, BENCH_WRK_THREADS=str(threads))
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 120)
    line = next((l for l in done.stdout.splitlines() if l.startswith("BENCH_WRK ")), None)
    if done.returncode != 0 or line is None:
        raise Failure(f"wrk failed (exit {done.returncode}): {done.stderr.strip()[-400:]} {done.stdout[-400:]}")
    counts = json.loads(line[len("BENCH_WRK "):])
    problems = []
    for key in ("non2xx", "connect_errors", "read_errors", "write_errors", "timeouts"):
        if counts[key]:
            problems.append(f"{counts[key]} {key}")
    if counts["exhausted"]:
        problems.append("ran out of pre-signed requests (raise HOOKGATE_BENCH_SIGNED_PER_SEC)")
    if counts["requests"] == 0:
        problems.append("no request answered")
    if problems:
        last = counts.get("last_failure") or ""
        raise Failure("; ".join(problems) + (f" (last: {last})" if last else ""))
    counts["rps"] = counts["requests"] / (counts["duration_us"] / 1e6)
    ANSWERED["2xx"] += counts["requests"]
    return counts


def measured_run(pids, url, mode, arg, connections, seconds, rate=0):
    """One wrk run with the server's CPU and peak RSS around it."""
    for pid in pids:
        reset_peak_rss(pid)
    before = cpu_seconds(pids)
    counts = wrk(url, mode, arg, connections, seconds, rate)
    cpu = cpu_seconds(pids) - before
    rss = [peak_rss_mb(pid) for pid in pids]
    return {
        "rps": counts["rps"],
        "requests": counts["requests"],
        "p50_ms": counts["p50_us"] / 1000,
        "p99_ms": counts["p99_us"] / 1000,
        "p999_ms": counts["p999_us"] / 1000,
        "cpu_s_per_10k": cpu / counts["requests"] * 10000,
        "peak_rss_mb": rss[0] if rss else None,
    }


def wait_for_deliveries(receiver, expected, seconds):
    """Polls the receiver's count until it reaches `expected` or `seconds` pass; returns the count."""
    deadline = time.time() + seconds
    delivered = 0
    while time.time() < deadline:
        delivered = int(urllib.request.urlopen(receiver.address + "/count", timeout=5).read())
        if delivered >= expected:
            break
        time.sleep(0.05)
    return delivered


class SignedRequests:
    """Files of pre-signed Stripe and GitHub requests, each request a distinct delivery id."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.made = 0

    def stripe(self, count):
        path = self.directory / f"stripe-{self.made}.txt"
        self.made += 1
        key = STRIPE_SECRET.encode()
        with open(path, "w") as out:
            for n in range(count):
                body = json.dumps({
                    "id": f"evt_bench_{uuid.uuid4().hex}", "object": "event", "type": "payment_intent.succeeded",
                    "created": int(time.time()),
                    "data": {"object": order(n)},
                }, separators=(",", ":"))
                timestamp = int(time.time())
                signature = hmac.new(key, f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
                out.write(f"Stripe-Signature: t={timestamp},v1={signature}\t{body}\n")
        return path

    def github(self, count, secret=None):
        path = self.directory / f"github-{self.made}.txt"
        self.made += 1
        key = (secret or GITHUB_SECRET).encode()
        with open(path, "w") as out:
            for n in range(count):
                body = json.dumps({"action": "opened", "number": n, "pull_request": order(n)}, separators=(",", ":"))
                signature = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
                headers = "\x01".join([
                    "X-GitHub-Event: pull_request", f"X-GitHub-Delivery: {uuid.uuid4()}",
                    f"X-Hub-Signature-256: sha256={signature}",
                ])
                out.write(f"{headers}\t{body}\n")
        return path


def order(n):
    return {
        "id": f"ord_{n:012d}", "status": "paid", "customer": {"id": f"cus_{n % 999983:06d}",
        "email": f"customer{n % 999983}@example.com"},
        "lines": [{"sku": f"SKU-{n % 9973:04d}", "quantity": n % 5 + 1, "unitPrice": 12990}],
        "total": (n % 5 + 1) * 12990, "currency": "EUR",
    }


# ---------------------------------------------------------------------------------------------
# hookgate
# ---------------------------------------------------------------------------------------------


def delivery_config():
    """The config lines that let subscriptions deliver to http://127.0.0.1 (names change)."""
    override = os.environ.get("HOOKGATE_BENCH_DELIVERY_CONFIG")
    if override:
        return override.replace("\\n", "\n")
    binary = HOOKGATE.read_bytes()
    if b"delivery_allow_networks" in binary:
        return 'delivery_allow_http = true\ndelivery_allow_networks = ["127.0.0.0/8"]'
    return "delivery_allow_http = true\ndelivery_allow_private_networks = true"


def client_limits():
    """The config lines that lift the per-address limits: the load comes from one address, as
    traffic from many senders would not (the rate buckets stay off the measured path)."""
    if b"client_requests_per_second" not in HOOKGATE.read_bytes():
        return ""
    return ("client_requests_per_second = 0\nmax_connections_per_client = 4096\n"
            "smtp_client_messages_per_minute = 0\nsmtp_max_connections_per_client = 512\n")


class Hookgate:
    def __init__(self, work, name, database=None):
        self.home = Path(work) / name
        defs = self.home / "defs"
        defs.mkdir(parents=True)
        for source in ("ecommstore.json", "ordersmail.json", "sources/stripe.json", "sources/github.json"):
            shutil.copy(ROOT / "hook-definitions" / source, defs / Path(source).name)
        config = self.home / "hookgate.toml"
        config.write_text(f"max_body_bytes = 1048576\nmail_authentication = false\n{delivery_config()}\n{client_limits()}")
        self.database = database or str(self.home / "hookgate.db")
        self.server = Server(
            name,
            [str(HOOKGATE), "serve", "--config", str(config), "--http", "127.0.0.1:0", "--smtp", "127.0.0.1:0",
             "--database", self.database, "--definitions", str(defs)],
            r"http listening on (http://\S+)",
            # PostgreSQL requires a key for subscription secrets at rest; SQLite makes its own.
            env={"HOOKGATE_ADMIN_TOKEN": ADMIN_TOKEN, "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
                 "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET, "RUST_LOG": "warn", "HOOKGATE_SECRETS_KEY": SECRETS_KEY},
            cwd=self.home, log_dir=work,
        )
        self.base = self.server.address.rstrip("/")
        smtp = [line for line in self.server.lines if "smtp listening on" in line]
        self.smtp = smtp[0].split("smtp listening on ")[1].split()[0] if smtp else None
        hooks = http("GET", f"{self.base}/api/hooks", token=ADMIN_TOKEN)["data"]
        self.hooks = {hook["eventName"]: hook for hook in hooks}

    def url(self, event_name):
        path = urllib.request.urlparse(self.hooks[event_name]["url"]).path
        return f"{self.base}{path}"

    def kill(self):
        self.server.kill()


# ---------------------------------------------------------------------------------------------
# The scenarios
# ---------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, options, work):
        self.options = options
        self.work = Path(work)
        self.seconds = options.seconds
        self.sweep_seconds = options.sweep_seconds
        self.warmup = options.warmup
        self.signed = SignedRequests(self.work)
        self.rows = []
        self.sweeps = {"connections": {}, "body_kib": {}}
        self.failed = []
        self.notes = []

    def row(self, name, label, measure):
        """Runs `measure` (which returns a dict of figures); a Failure becomes a failed row."""
        log(f"scenario {name} ...")
        try:
            figures = measure()
        except Failure as failure:
            log(f"scenario {name} FAILED: {failure}")
            self.failed.append(name)
            self.rows.append({"name": name, "label": label, "failed": str(failure)})
            return None
        figures.update({"name": name, "label": label})
        self.rows.append(figures)
        log(f"scenario {name}: {json.dumps(figures)}")
        return figures

    def standard(self, pids, url, mode, arg_for_run):
        """The two standard runs: 64 connections closed loop, then a fixed 5,000/s."""
        def once(seconds, rate=0, measured=True):
            arg = arg_for_run(seconds)
            try:
                if not measured:
                    return wrk(url, mode, arg, CONNECTIONS, seconds, rate)
                return measured_run(pids, url, mode, arg, CONNECTIONS, seconds, rate)
            finally:
                # Pre-signed request files are large: each is used once.
                if isinstance(arg, Path):
                    arg.unlink(missing_ok=True)
        if self.warmup:
            once(self.warmup, measured=False)
        closed = once(self.seconds)
        closed["fixed"] = once(self.seconds, FIXED_RATE)
        return closed

    def signed_arg(self, kind):
        def make(seconds):
            count = SIGNED_PER_SECOND * seconds
            return self.signed.stripe(count) if kind == "stripe" else self.signed.github(count)
        return make

    # --- the scenarios -------------------------------------------------------------------------

    def limit(self):
        server = Server("limit", [str(LIMIT), "127.0.0.1:0"], r"listening on (http://\S+)", log_dir=self.work)
        try:
            figures = self.row("limit", "bare hyper (limit)",
                               lambda: self.standard([server.pid], server.address + "/", "form",
                                                     lambda _: FORM_BODY_BYTES))
            if not self.options.no_sweeps:
                self.sweep("limit", [server.pid], server.address + "/")
            return figures
        finally:
            server.kill()

    def storage(self):
        def measure():
            gateway = Hookgate(self.work, "hookgate-storage-template")
            try:
                wrk(gateway.url(FORM_EVENT), "form", FORM_BODY_BYTES, 1, 1)
            finally:
                gateway.kill()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run(
                [str(STORAGE), gateway.database, str(self.seconds), str(self.options.storage_batch)],
                capture_output=True, text=True, timeout=self.seconds + 120)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            if done.returncode != 0:
                raise Failure(f"bench_storage failed: {done.stderr.strip()[-400:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            return {"rps": result["events_per_s"], "requests": result["events"],
                    "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
                    "p999_ms": result["p999_us"] / 1000, "cpu_s_per_10k": cpu / result["events"] * 10000,
                    "peak_rss_mb": None,
                    "note": f"{result['batch']} events per transaction; latency is per commit"}
        return self.row("storage", "SQLite storage limit", measure)

    def peer(self):
        if shutil.which("webhook") is None:
            raise Failure("adnanh/webhook is not installed (Debian package webhook)")
        hooks = self.work / "webhook-hooks.json"
        hooks.write_text(json.dumps([{
            "id": "bench", "execute-command": shutil.which("true"), "response-message": "ok",
            "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": GITHUB_SECRET,
                                       "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}},
        }]))
        port = free_port()
        server = Server("webhook", ["webhook", "-hooks", str(hooks), "-ip", "127.0.0.1", "-port", str(port)],
                        None, log_dir=self.work)
        try:
            wait_listening(port)
            url = f"http://127.0.0.1:{port}/hooks/bench"
            return self.row("webhook", "adnanh/webhook 2.8 (HMAC rule)",
                            lambda: self.standard([server.pid], url, "file", self.signed_arg("github")))
        finally:
            server.kill()

    def hookgate_http(self):
        gateway = Hookgate(self.work, "hookgate-sqlite")
        ANSWERED["2xx"] = 0
        try:
            pids = [gateway.server.pid]
            form = gateway.url(FORM_EVENT)
            if self.options.profile:
                self.profiled(gateway, form)
            self.row("form", "hookgate form hook (SQLite)",
                     lambda: self.standard(pids, form, "form", lambda _: FORM_BODY_BYTES))
            self.row("stripe", "hookgate Stripe-signed",
                     lambda: self.standard(pids, f"{gateway.base}/api/webhooks/stripe", "file",
                                           self.signed_arg("stripe")))
            self.row("github", "hookgate GitHub-signed",
                     lambda: self.standard(pids, f"{gateway.base}/api/webhooks/github", "file",
                                           self.signed_arg("github")))
            if not self.options.no_sweeps:
                self.sweep("form", pids, form)
        finally:
            gateway.kill()
        self.check_stored(gateway)

    def check_stored(self, gateway):
        """Every 2xx reply was a promise: the killed gateway's file must hold at least that many
        events (a few more may have committed while wrk stopped reading)."""
        with sqlite3.connect(gateway.database) as file:
            stored = file.execute("SELECT count(*) FROM events").fetchone()[0]
        answered = ANSWERED["2xx"]
        if stored < answered:
            self.failed.append("stored")
            self.notes.append(f"LOST EVENTS: hookgate answered 2xx {answered} times but its store holds {stored}")
        else:
            self.notes.append(f"hookgate (SQLite) answered 2xx {answered:,} times; its store, read after a "
                              f"SIGKILL, holds {stored:,} events")

    def sweep(self, name, pids, url):
        log(f"sweep {name}: connections {SWEEP_CONNECTIONS}, body KiB {SWEEP_KIB}")
        seconds = self.sweep_seconds
        try:
            self.sweeps["connections"][name] = {
                str(c): round(measured_run(pids, url, "form", FORM_BODY_BYTES, c, seconds)["rps"], 1)
                for c in SWEEP_CONNECTIONS}
            self.sweeps["body_kib"][name] = {
                str(k): round(measured_run(pids, url, "form", k * 1024, CONNECTIONS, seconds)["rps"], 1)
                for k in SWEEP_KIB}
        except Failure as failure:
            log(f"sweep {name} FAILED: {failure}")
            self.failed.append(f"sweep-{name}")
            self.notes.append(f"sweep of {name} failed: {failure}")

    def deliveries(self):
        receiver = Server("receiver", [str(LIMIT), "127.0.0.1:0"], r"listening on (http://\S+)", log_dir=self.work)
        gateway = Hookgate(self.work, "hookgate-deliveries")
        try:
            def measure():
                for _ in range(2):
                    try:
                        http("POST", f"{gateway.base}/api/webhooks",
                             {"url": receiver.address + "/", "events": [FORM_EVENT]}, token=ADMIN_TOKEN)
                    except urllib.error.HTTPError as error:
                        raise Failure(f"creating a subscription answered {error.code}: {error.read()[:300]!r}")
                started = time.time()
                figures = measured_run([gateway.server.pid], gateway.url(FORM_EVENT), "form", FORM_BODY_BYTES,
                                       CONNECTIONS, self.seconds)
                expected = 2 * figures["requests"]
                delivered = wait_for_deliveries(receiver, expected, 120)
                drained = time.time() - started
                if delivered < expected:
                    raise Failure(f"{delivered} of {expected} deliveries arrived within 120 s of the load's end")
                figures["deliveries_per_s"] = delivered / drained
                figures["note"] = (f"{delivered} deliveries to 2 subscriptions, "
                                   f"{delivered / drained:.0f}/s until the last arrived")
                return figures
            return self.row("deliveries", "hookgate + 2 subscriptions", measure)
        finally:
            gateway.kill()
            receiver.kill()

    def delivery_backlog(self):
        """The issue's delivery measurement: two paused subscriptions gather a backlog while the form
        hook is loaded, then are resumed; the rate is deliveries per second from the resume until
        the receiver has counted them all."""
        receiver = Server("backlog-receiver", [str(LIMIT), "127.0.0.1:0"], r"listening on (http://\S+)",
                          log_dir=self.work)
        gateway = Hookgate(self.work, "hookgate-backlog")
        try:
            def measure():
                ids = []
                for _ in range(2):
                    created = http("POST", f"{gateway.base}/api/webhooks",
                                   {"url": receiver.address + "/", "events": [FORM_EVENT], "status": "paused"},
                                   token=ADMIN_TOKEN)
                    ids.append(created["id"])
                counts = wrk(gateway.url(FORM_EVENT), "form", FORM_BODY_BYTES, CONNECTIONS, self.seconds)
                time.sleep(1)
                reset_peak_rss(gateway.server.pid)
                before = cpu_seconds([gateway.server.pid])
                started = time.time()
                for subscription in ids:
                    http("PATCH", f"{gateway.base}/api/webhooks/{subscription}", {"status": "active"},
                         token=ADMIN_TOKEN)
                expected = 2 * counts["requests"]
                delivered = wait_for_deliveries(receiver, expected, 300)
                drained = time.time() - started
                if delivered < expected:
                    raise Failure(f"{delivered} of {expected} backlog deliveries arrived within 300 s")
                cpu = cpu_seconds([gateway.server.pid]) - before
                return {"rps": delivered / drained, "requests": delivered, "p50_ms": None, "p99_ms": None,
                        "p999_ms": None, "cpu_s_per_10k": cpu / delivered * 10000,
                        "peak_rss_mb": peak_rss_mb(gateway.server.pid),
                        "note": (f"a backlog of {expected:,} deliveries (2 paused subscriptions), resumed: "
                                 f"deliveries/s until the receiver (bare hyper, the limit's server) counted the last")}
            return self.row("delivery-backlog", "hookgate backlog drain, 2 subscriptions", measure)
        finally:
            gateway.kill()
            receiver.kill()

    def postgres(self):
        url = self.options.postgres
        if not url or shutil.which("psql") is None:
            self.notes.append("PostgreSQL scenario skipped: no --postgres URL or no psql")
            return None
        schema = f"hgbench_{uuid.uuid4().hex[:16]}"

        def measure():
            done = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", f"CREATE SCHEMA {schema}"],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise Failure(f"cannot create schema {schema}: {done.stderr.strip()}")
            separator = "&" if "?" in url else "?"
            database = f"{url}{separator}options=-csearch_path%3D{schema}&application_name={schema}"
            gateway = Hookgate(self.work, "hookgate-postgres", database=database)
            try:
                form = gateway.url(FORM_EVENT)
                backends = lambda: [int(pid) for pid in subprocess.run(
                    ["psql", url, "-Atc", f"SELECT pid FROM pg_stat_activity WHERE application_name = '{schema}'"],
                    capture_output=True, text=True).stdout.split()]
                figures = self.standard([gateway.server.pid], form, "form", lambda _: FORM_BODY_BYTES)
                pg_before = cpu_seconds(pids := backends())
                extra = measured_run([gateway.server.pid], form, "form", FORM_BODY_BYTES, CONNECTIONS, self.seconds)
                pg_cpu = cpu_seconds(pids) - pg_before
                figures["note"] = (f"PostgreSQL backends' own CPU: {pg_cpu / extra['requests'] * 10000:.2f} s/10k "
                                   f"(a second 64-connection run: {extra['rps']:.0f}/s)")
                return figures
            finally:
                gateway.kill()
                subprocess.run(["psql", url, "-qc", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
                               capture_output=True)
        return self.row("postgres", "hookgate form hook (PostgreSQL)", measure)

    # --- SMTP ----------------------------------------------------------------------------------

    def smtp(self):
        if shutil.which("smtp-source") is None and not Path("/usr/sbin/smtp-source").exists():
            self.notes.append("SMTP scenarios skipped: Postfix's smtp-source is missing")
            return
        messages = max(200, int(self.options.smtp_messages))
        gateway = Hookgate(self.work, "hookgate-smtp")
        try:
            address = next(hook["address"] for hook in gateway.hooks.values() if hook.get("address"))
            message = self.work / "order-mail.eml"
            message.write_bytes(order_mail(address))
            size_kb = message.stat().st_size / 1000
            self.row("smtp-hookgate", f"hookgate SMTP ({size_kb:.0f} kB)",
                     lambda: smtp_source([gateway.server.pid], gateway.smtp, address, message, messages))
        finally:
            gateway.kill()
        port = free_port()
        # smtp-sink refuses to run as root without a user to switch to.
        user = ["-u", "postfix"] if os.geteuid() == 0 else []
        sink = Server("smtp-sink", [smtp_tool("smtp-sink"), *user, f"127.0.0.1:{port}", "256"], None,
                      log_dir=self.work)
        try:
            wait_listening(port)
            self.row("smtp-sink", "Postfix smtp-sink (transport ceiling)",
                     lambda: smtp_source([sink.pid], f"127.0.0.1:{port}", "bench@localhost", message, messages))
        finally:
            sink.kill()
        postfix = PostfixQueue(self.work)
        try:
            self.row("postfix", "Postfix 3.7, durable queue",
                     lambda: smtp_source(postfix.pids, postfix.address, "bench@bench.localhost", message,
                                         messages))
        finally:
            postfix.stop()

    # --- profile -------------------------------------------------------------------------------

    def profiled(self, gateway, form):
        log("profile: perf record --call-graph dwarf of hookgate under the form load")
        data = self.work / "perf.data"
        perf = subprocess.Popen(
            ["perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-o", str(data),
             "-p", str(gateway.server.pid)], stdout=subprocess.DEVNULL, stderr=open(self.work / "perf.log", "wb"))
        time.sleep(1)
        try:
            wrk(form, "form", FORM_BODY_BYTES, CONNECTIONS, self.seconds)
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=120)
        stamp = self.options.stamp
        svg = RESULTS / f"{stamp}-flamegraph-form.svg"
        script = subprocess.Popen(["perf", "script", "-i", str(data)], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        collapse = subprocess.Popen(["inferno-collapse-perf"], stdin=script.stdout, stdout=subprocess.PIPE)
        with open(svg, "wb") as out:
            graph = subprocess.run(["inferno-flamegraph", "--title", "hookgate, form hook, 64 connections"],
                                   stdin=collapse.stdout, stdout=out)
        if graph.returncode != 0:
            self.failed.append("profile")
            self.notes.append("the flame graph could not be drawn (see perf.log)")
            return
        shutil.copy(svg, RESULTS / f"{'quick' if self.options.quick else 'latest'}-flamegraph-form.svg")
        self.notes.append(f"flame graph of hookgate under the form load: {svg.name}")


def smtp_tool(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def smtp_source(pids, address, recipient, message, messages):
    """Postfix's smtp-source, 16 sessions, the same message each time; rate over its wall time."""
    # A callable lists the processes again afterwards (Postfix starts an smtpd per session).
    listed = pids if callable(pids) else (lambda: pids)
    for pid in listed():
        reset_peak_rss(pid)
    before = cpu_seconds(listed())
    started = time.time()
    done = subprocess.run(
        [smtp_tool("smtp-source"), "-s", str(SMTP_SESSIONS), "-m", str(messages), "-d", "-f", "bench@shop.example",
         "-t", recipient, "-F", str(message), address], capture_output=True, text=True, timeout=600)
    elapsed = time.time() - started
    if done.returncode != 0 or done.stderr.strip():
        raise Failure(f"smtp-source failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
    after = listed()
    cpu = cpu_seconds(after) - before
    return {"rps": messages / elapsed, "requests": messages, "p50_ms": None, "p99_ms": None, "p999_ms": None,
            "cpu_s_per_10k": cpu / messages * 10000, "peak_rss_mb": peak_rss_mb(after[0]),
            "note": f"{SMTP_SESSIONS} smtp-source sessions; messages/s over its wall time"}


def order_mail(to):
    """A ~53 kB HTML order confirmation with one JSON-LD block (the shape of benches/email.rs)."""
    rows = "".join(
        f'<tr><td class="item" style="padding:4px;font-family:Arial">Item {line}: trail running shoes</td>'
        f"<td>1</td><td>129,90 &euro;</td></tr>\n" for line in range(400))
    json_ld = ('{"@context":"https://schema.org","@type":"Order","merchant":{"@type":"Organization",'
               '"name":"Ecommerce Store"},"orderNumber":"ES-100234","priceCurrency":"EUR","price":"129.90",'
               '"acceptedOffer":{"@type":"Offer","itemOffered":{"@type":"Product","name":"Trail Running Shoes"},'
               '"price":"129.90","priceCurrency":"EUR"}}')
    text = (f"From: Ecommerce Store <orders@shop.example>\nTo: {to}\nSubject: Your order ES-100234\n"
            "Date: Mon, 23 Nov 2026 10:00:00 +0000\nMIME-Version: 1.0\n"
            "Content-Type: text/html; charset=utf-8\n\n<!DOCTYPE html>\n"
            '<html><head><meta charset="utf-8"><title>Order</title>\n'
            f'<script type="application/ld+json">{json_ld}</script></head>\n<body><table>\n{rows}'
            "</table></body></html>\n")
    return text.encode()


class PostfixQueue:
    """A private Postfix instance on a loopback port that takes mail into its durable queue and
    then discards it (so the queue manager's work is small); its own config and queue directory."""

    def __init__(self, work):
        self.config = Path(work) / "postfix"
        self.queue = Path("/var/spool") / f"postfix-bench-{os.getpid()}"
        self.data = Path("/var/lib") / f"postfix-bench-{os.getpid()}"
        self.log = Path("/var/log") / f"postfix-bench-{os.getpid()}.log"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config.mkdir(parents=True)
        shutil.copy("/etc/postfix/master.cf" if Path("/etc/postfix/master.cf").exists()
                    else "/usr/share/postfix/master.cf.dist", self.config / "master.cf")
        master = (self.config / "master.cf").read_text()
        master = re.sub(r"(?m)^smtp\s+inet\s.*$", f"{self.address} inet n - n - - smtpd", master)
        (self.config / "master.cf").write_text(master)
        (self.config / "main.cf").write_text("\n".join([
            "compatibility_level = 3.6", f"queue_directory = {self.queue}", f"data_directory = {self.data}",
            "mail_owner = postfix", "setgid_group = postdrop", "inet_interfaces = loopback-only",
            "inet_protocols = ipv4", "myhostname = bench.localhost", "mydestination = bench.localhost",
            "mynetworks = 127.0.0.0/8", "local_transport = discard:", "default_transport = discard:",
            f"maillog_file = {self.log}", "smtpd_recipient_restrictions = permit_mynetworks, reject",
            "message_size_limit = 10240000", "alias_maps =", "alias_database =", "local_recipient_maps =",
            "master_service_disable =", "",
        ]))
        self.queue.mkdir(exist_ok=True)
        self.data.mkdir(exist_ok=True)
        subprocess.run(["chown", "postfix", str(self.data)], check=False)
        done = subprocess.run(["postfix", "-c", str(self.config), "start"], capture_output=True, text=True)
        if done.returncode != 0:
            logged = self.log.read_text()[-400:] if self.log.exists() else ""
            raise Failure(f"postfix -c {self.config} start failed: {done.stderr.strip()[-400:]} {logged}")
        wait_listening(self.port)

    def pids(self):
        """Every process of this instance (master and its children), by the queue directory."""
        found = []
        pid_file = self.queue / "pid" / "master.pid"
        master = int(pid_file.read_text().split()[0])
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                if parent == master:
                    found.append(int(entry.name))
        return [master] + found

    def stop(self):
        subprocess.run(["postfix", "-c", str(self.config), "stop"], capture_output=True)
        shutil.rmtree(self.queue, ignore_errors=True)
        shutil.rmtree(self.data, ignore_errors=True)
        self.log.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------


def machine(work):
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    path = Path(work) / "fsync-probe"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DSYNC, 0o600)
    block = b"\0" * 4096
    times = []
    try:
        for _ in range(200):
            started = time.perf_counter()
            os.pwrite(descriptor, block, 0)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(descriptor)
        path.unlink()
    times.sort()
    versions = {}
    for tool, argv in {"wrk": ["wrk", "-v"], "webhook": ["webhook", "-version"]}.items():
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
            versions[tool] = (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            versions[tool] = "missing"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "load_average": os.getloadavg()[0],
        "fsync_4k_dsync_ms_p50": statistics.median(times), "fsync_4k_dsync_ms_p99": times[int(len(times) * 0.99)],
        "kernel": os.uname().release, "versions": versions,
        "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
    }


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fmt(value, digits=1):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def markdown(report):
    m = report["machine"]
    lines = []
    if report["quick"]:
        lines += ["> **Quick validation run on a busy machine, not a result.** `bench/run --quick` "
                  f"({report['seconds']} s per run) checks that every scenario works end to end; "
                  "its figures are noise. The published figures come from a full `bench/run` on a quiet machine.", ""]
    lines += [
        f"# hookgate benchmark, {report['started']}", "",
        f"- Command: `{report['command']}` (commit {m['commit']})",
        f"- CPU: {m['cpu']}, {m['cores']} cores; kernel {m['kernel']}; load average at start {m['load_average']:.2f}",
        f"- fsync: a 4 KiB `O_DSYNC` write takes {m['fsync_4k_dsync_ms_p50']:.3f} ms (median of 200; "
        f"p99 {m['fsync_4k_dsync_ms_p99']:.3f} ms)",
        f"- Load: {m['versions'].get('wrk', '?')}, {WRK_THREADS[0]} thread{'s' if WRK_THREADS[0] > 1 else ''}; {CONNECTIONS} keep-alive connections closed loop, "
        f"and paced at a fixed {FIXED_RATE:,}/s; {report['seconds']} s per run after a {report['warmup']} s warm-up",
        "",
        f"| scenario | req/s @{CONNECTIONS} | ratio | p50 ms | p99 ms | p99.9 ms | CPU s/10k | peak RSS MB "
        f"| req/s @{FIXED_RATE // 1000}k/s | p50 ms @{FIXED_RATE // 1000}k/s | p99 ms @{FIXED_RATE // 1000}k/s | p99.9 ms @{FIXED_RATE // 1000}k/s "
        f"| CPU s/10k @{FIXED_RATE // 1000}k/s | RSS MB @{FIXED_RATE // 1000}k/s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    limit = next((row["rps"] for row in report["rows"] if row["name"] == "limit" and "rps" in row), None)
    smtp_sink = next((row["rps"] for row in report["rows"] if row["name"] == "smtp-sink" and "rps" in row), None)
    notes = []
    for row in report["rows"]:
        if "failed" in row:
            lines.append(f"| {row['label']} | **FAILED** | | | | | | | | | | | | |")
            notes.append(f"{row['label']}: failed: {row['failed']}")
            continue
        fixed = row.get("fixed", {})
        # SMTP rows compare with smtp-sink, the SMTP transport's ceiling; the rest with bare hyper.
        anchor = smtp_sink if row["name"] in SMTP_ROWS else limit
        ratio = f"{row['rps'] / anchor:.2f}" if anchor else "–"
        lines.append(
            f"| {row['label']} | {fmt(row['rps'], 0)} | {ratio} | {fmt(row['p50_ms'], 2)} | {fmt(row['p99_ms'], 2)} "
            f"| {fmt(row['p999_ms'], 2)} | {fmt(row['cpu_s_per_10k'], 2)} | {fmt(row['peak_rss_mb'], 0)} "
            f"| {fmt(fixed.get('rps'), 0)} | {fmt(fixed.get('p50_ms'), 2)} | {fmt(fixed.get('p99_ms'), 2)} | {fmt(fixed.get('p999_ms'), 2)} "
            f"| {fmt(fixed.get('cpu_s_per_10k'), 2)} | {fmt(fixed.get('peak_rss_mb'), 0)} |")
        if row.get("note"):
            notes.append(f"{row['label']}: {row['note']}")
        if fixed and fixed["rps"] < 0.95 * FIXED_RATE:
            notes.append(f"{row['label']}: did not keep up with {FIXED_RATE:,}/s at {CONNECTIONS} connections "
                         f"(reached {fixed['rps']:,.0f}/s), so its fixed-rate latencies are at saturation")
    lines.append("")
    for title, key, unit in (("connections", "connections", "connections"), ("body size", "body_kib", "KiB")):
        sweep = report["sweeps"].get(key) or {}
        if not sweep:
            continue
        columns = SWEEP_CONNECTIONS if key == "connections" else SWEEP_KIB
        lines += [f"Throughput (req/s) by {title}:", "",
                  "| server | " + " | ".join(f"{c} {unit}" for c in columns) + " |",
                  "|---|" + "--:|" * len(columns)]
        for name, values in sweep.items():
            lines.append(f"| {name} | " + " | ".join(fmt(values.get(str(c)), 0) for c in columns) + " |")
        if "form" in sweep and "limit" in sweep:
            lines.append("| form / limit | " + " | ".join(
                f"{sweep['form'][str(c)] / sweep['limit'][str(c)]:.2f}" if sweep["limit"].get(str(c)) else "–"
                for c in columns) + " |")
        lines.append("")
    notes += report["notes"]
    if notes:
        lines += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    lines += [
        "Columns: req/s is 2xx replies per second (messages per second for SMTP rows); ratio is over the bare "
        "hyper limit of the same run (SMTP rows: over smtp-sink's); latency is wrk's, from writing a request to reading its reply (the storage "
        "limit: one commit of a batch); CPU s/10k is the server process's user + system CPU seconds (its children "
        "included) per 10,000 requests; peak RSS is its VmHWM over that run (reset before each run). "
        "Any non-2xx reply or socket error fails a row instead of giving a figure.", "",
        f"Chart: `{report['chart']}`.", "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--seconds", type=int)
    parser.add_argument("--only", default="")
    parser.add_argument("--no-sweeps", action="store_true")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--postgres", default=os.environ.get("HOOKGATE_BENCH_POSTGRES_URL",
                                                            "postgres://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--storage-batch", type=int, default=64)
    parser.add_argument("--command", default="bench/run")
    options = parser.parse_args()
    WRK_THREADS[0] = max(1, options.wrk_threads)
    options.seconds = options.seconds or (3 if options.quick else 10)
    options.sweep_seconds = 2 if options.quick else 5
    options.warmup = 1 if options.quick else 2
    options.smtp_messages = 2000 if options.quick else 10000
    options.stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS.mkdir(parents=True, exist_ok=True)
    only = {name for name in options.only.split(",") if name}
    work = tempfile.mkdtemp(prefix="hookgate-bench-")
    started = time.time()
    bench = Bench(options, work)
    report = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": options.quick,
              "command": options.command, "seconds": options.seconds, "warmup": options.warmup}
    report["machine"] = machine(work)
    log(f"machine: {json.dumps(report['machine'])}")
    steps = [("limit", bench.limit), ("storage", bench.storage), ("webhook", bench.peer),
             ("hookgate", bench.hookgate_http), ("deliveries", bench.deliveries), ("delivery-backlog", bench.delivery_backlog), ("postgres", bench.postgres),
             ("smtp", bench.smtp)]
    for name, step in steps:
        if only and name not in only:
            continue
        try:
            step()
        except Failure as failure:
            log(f"{name} FAILED: {failure}")
            bench.failed.append(name)
            bench.notes.append(f"{name} failed: {failure}")
    report.update({"rows": bench.rows, "sweeps": bench.sweeps, "failed": bench.failed, "notes": bench.notes,
                   "elapsed_s": round(time.time() - started)})
    kind = ("partial-" if only else "") + ("quick" if options.quick else "full")
    name = f"{options.stamp}-{kind}"
    # A partial run (--only) keeps its timestamped files but leaves latest.* / quick.* alone.
    latest = "partial" if only else "quick" if options.quick else "latest"
    report["chart"] = f"{latest}.svg"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown(report))
    chart.write(report, RESULTS / f"{name}.svg")
    for suffix in ("json", "md", "svg"):
        shutil.copy(RESULTS / f"{name}.{suffix}", RESULTS / f"{latest}.{suffix}")
    print(markdown(report))
    log(f"results: bench/results/{name}.md, .svg, .json (and {latest}.*), {report['elapsed_s']} s in all")
    if os.environ.get("HOOKGATE_BENCH_KEEP_WORK"):
        log(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if bench.failed:
        log(f"FAILED: {', '.join(bench.failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
