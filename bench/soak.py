#!/usr/bin/env python3
"""Soak of `qwen3guard serve`: concurrent clients, mixed endpoints, stream sessions (some
abandoned to expire), malformed requests mixed in, and a kill -9 and restart in the middle.

  soak.py --bin target/release/qwen3guard --gen DIR --stream DIR --out DIR
          [--clients 32] [--requests 10000] [--sessions 1000] [--kill-at 0.5]

It starts the server itself (so that it can kill and restart it and read its /proc), and
records every second: resident memory, open file descriptors, threads, requests done and
the p99 latency of the last second. It checks, and says in its summary:
- no valid request failed (5xx, a wrong status, or no answer), outside the restart window;
- every malformed request got a 4xx with the error shape;
- resident memory after warm-up stays flat (growth from the first post-warm-up sample of
  the second server to its end);
- once the load stops and the abandoned sessions have expired, no session is open, and
  descriptors and threads are back to their level before the load.
Writes summary.json, samples.jsonl and soak.svg (memory and p99 over time) into --out.
Standard library only.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_load import Client, percentile  # noqa: E402

TOPICS = ["bake bread", "pick a lock", "fix a bike", "make a bomb", "write a poem", "hack a phone"]
ANSWER = "Sure. First you gather what you need, then you follow the steps one by one, carefully."
MALFORMED = [
    ("/v1/guard", b"{not json"),
    ("/v1/guard", json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode()),
    ("/v1/guard", json.dumps({"messages": [], "extra": 1}).encode()),
    ("/v1/moderations", json.dumps({"input": 42}).encode()),
    ("/v1/stream/sessions", json.dumps({"messages": [{"role": "assistant", "content": "x"}]}).encode()),
    ("/v1/stream/sessions/ss_nobody-0_1/append", json.dumps({"text": "x"}).encode()),
]


def proc(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Server:
    def __init__(self, args):
        self.args, self.process = args, None
        self.url = f"http://127.0.0.1:{args.port}"

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3GUARD_")}
        env["RAYON_NUM_THREADS"] = str(self.args.threads)
        self.process = subprocess.Popen(
            [self.args.bin, "serve", "--gen-model", self.args.gen, "--stream-model", self.args.stream,
             "--dtype", self.args.dtype, "--host", "127.0.0.1", "--port", str(self.args.port),
             "--session-idle-secs", str(self.args.idle)],
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.args.out, "serve.log"), "a"))
        for _ in range(1200):
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise SystemExit("the server did not get ready")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def metric(self, name):
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None


class Soak:
    def __init__(self, args, server):
        self.args, self.server = args, server
        self.lock = threading.Lock()
        self.next_job, self.sessions_started = 0, 0
        self.latencies = []          # (time, seconds) of valid requests
        self.failures = []           # valid requests that failed, outside the restart window
        self.malformed = {"sent": 0, "bad": []}
        self.restarting = threading.Event()
        self.back = threading.Event()  # set when no restart is under way
        self.back.set()
        self.restart_misses = 0
        self.counts = {"guard": 0, "moderations": 0, "session_calls": 0, "sessions": 0,
                       "abandoned": 0, "malformed": 0}

    def take(self):
        with self.lock:
            if self.next_job >= self.args.requests:
                return None
            self.next_job += 1
            return self.next_job - 1

    def in_restart(self, status):
        """Whether a failure belongs to the restart window: no answer, or 503 while the
        new process loads its models, while the kill and restart are under way."""
        return status in (None, 503) and self.restarting.is_set()

    def record(self, started, status, expected, what):
        elapsed = time.perf_counter() - started
        with self.lock:
            if status in expected:
                self.latencies.append((time.time(), elapsed))
            else:
                self.failures.append({"what": what, "status": status})

    def post(self, client, path, body, expected, what):
        """One valid request; one that meets the restart is sent again once the server is
        back (counted apart), as a client with a retry would."""
        while True:
            started = time.perf_counter()
            try:
                status, payload = client.post(path, body)
            except Exception:  # a refused or reset connection
                client.conn = None
                status, payload = None, b""
            if self.in_restart(status):
                with self.lock:
                    self.restart_misses += 1
                self.back.wait()
                if what in ("append", "close"):
                    return None, b""  # the session died with the process
                continue
            self.record(started, status, expected, what)
            return status, payload

    def session(self, client, i):
        with self.lock:
            self.counts["sessions"] += 1
        status, payload = self.post(client, "/v1/stream/sessions", {"messages": [
            {"role": "user", "content": f"Question {i}: how do I {TOPICS[i % len(TOPICS)]}?"}]},
            {201}, "open")
        if status != 201:
            return
        sid = json.loads(payload)["id"]
        pieces = [ANSWER[k:k + 23] for k in range(0, len(ANSWER), 23)]
        sent = 0
        for n, piece in enumerate(pieces):
            if (i // 10) % 10 == 0 and n == 2:  # abandoned: left for the idle expiry
                with self.lock:
                    self.counts["abandoned"] += 1
                return
            status, _ = self.post(client, f"/v1/stream/sessions/{sid}/append",
                                  {"text": piece, "offset": sent, "final": n + 1 == len(pieces)},
                                  {200}, "append")
            with self.lock:
                self.counts["session_calls"] += 1
            if status != 200:
                return
            sent += len(piece)
        started = time.perf_counter()
        try:
            client.conn.request("DELETE", f"/v1/stream/sessions/{sid}")
            response = client.conn.getresponse()
            response.read()
            status = response.status
        except Exception:
            client.conn, status = None, None
        if self.in_restart(status):
            with self.lock:
                self.restart_misses += 1
            return
        self.record(started, status, {204}, "close")

    def malformed_request(self, client, i):
        path, data = MALFORMED[i % len(MALFORMED)]
        try:
            if client.conn is None:
                import http.client
                client.conn = http.client.HTTPConnection(client.host, client.port, timeout=60)
            client.conn.request("POST", path, data, {"content-type": "application/json"})
            response = client.conn.getresponse()
            payload = response.read()
            status = response.status
        except Exception:
            client.conn, status, payload = None, None, b""
        with self.lock:
            self.counts["malformed"] += 1
            self.malformed["sent"] += 1
            if self.in_restart(status):
                self.restart_misses += 1
                return
            shaped = False
            try:
                error = json.loads(payload)["error"]
                shaped = bool(error["message"]) and isinstance(error["code"], str)
            except Exception:
                pass
            if not (400 <= status < 500 and shaped):
                self.malformed["bad"].append({"path": path, "status": status})

    def worker(self):
        client = Client(self.server.url, timeout=120)
        while (i := self.take()) is not None:
            kind = i % 10
            with self.lock:
                wants_session = kind >= 8 and self.sessions_started < self.args.sessions
                if wants_session:
                    self.sessions_started += 1
            if wants_session:
                self.session(client, i)
            elif kind == 7:
                self.malformed_request(client, i)
            elif kind == 6:
                with self.lock:
                    self.counts["moderations"] += 1
                self.post(client, "/v1/moderations",
                          {"input": [f"how do I {TOPICS[i % 6]}?", f"tell me about {TOPICS[(i + 1) % 6]}"]},
                          {200}, "moderations")
            else:
                with self.lock:
                    self.counts["guard"] += 1
                messages = [{"role": "user", "content": f"Question {i}: how do I {TOPICS[i % 6]}?"}]
                if kind in (4, 5):
                    messages.append({"role": "assistant", "content": ANSWER})
                self.post(client, "/v1/guard", {"messages": messages, "max_new_tokens": 16},
                          {200}, "guard")


def svg(samples, path):
    """Resident memory (MiB) and p99 (ms) over time, one polyline each."""
    if not samples:
        return
    w, h, pad = 720, 260, 40
    t0, t1 = samples[0]["t"], samples[-1]["t"] or 1
    span = max(t1 - t0, 1e-9)
    rss_max = max(s["rss_mib"] for s in samples) * 1.1
    p99_max = max([s["p99_ms"] or 0 for s in samples] + [1]) * 1.1
    x = lambda t: pad + (w - 2 * pad) * (t - t0) / span
    y = lambda v, top: h - pad - (h - 2 * pad) * v / top
    rss = " ".join(f"{x(s['t']):.1f},{y(s['rss_mib'], rss_max):.1f}" for s in samples)
    p99 = " ".join(f"{x(s['t']):.1f},{y(s['p99_ms'], p99_max):.1f}" for s in samples if s["p99_ms"] is not None)
    kills = "".join(f'<line x1="{x(s["t"]):.1f}" y1="{pad}" x2="{x(s["t"]):.1f}" y2="{h - pad}" stroke="#999" stroke-dasharray="4"/>'
                    for s in samples if s.get("restarted"))
    open(path, "w").write(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">'
        f'<rect width="{w}" height="{h}" fill="white"/>{kills}'
        f'<polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="{rss}"/>'
        f'<polyline fill="none" stroke="#c0392b" stroke-width="1.5" points="{p99}"/>'
        f'<text x="{pad}" y="16" fill="#1f5fbf">resident memory (MiB, top {rss_max:.0f})</text>'
        f'<text x="{pad + 260}" y="16" fill="#c0392b">p99 per second (ms, top {p99_max:.0f})</text>'
        f'<text x="{pad}" y="{h - 12}">0 s</text><text x="{w - pad - 30}" y="{h - 12}">{span:.0f} s</text>'
        f'<text x="{pad + 120}" y="{h - 12}" fill="#777">dashed: kill -9 and restart</text></svg>')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--gen", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--dtype", default="f32")
    parser.add_argument("--out", required=True)
    parser.add_argument("--port", type=int, default=18500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=5, help="--session-idle-secs of the server")
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction of the jobs, 0 for none")
    parser.add_argument("--warmup", type=int, default=300, help="jobs before the memory baseline")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    server = Server(args)
    server.start()
    soak = Soak(args, server)
    samples, stop = [], threading.Event()
    baseline = {}

    def sampler():
        while not stop.is_set():
            pid = server.process.pid
            try:
                now = time.time()
                with soak.lock:
                    recent = [l for t, l in soak.latencies if t > now - 1]
                    done = soak.next_job
                sample = {"t": now, "jobs": done, "rss_mib": round(proc(pid, "VmRSS") / 1024, 1),
                          "fds": fds(pid), "threads": proc(pid, "Threads"),
                          "p99_ms": round(1000 * percentile(recent, 0.99), 1) if recent else None,
                          "pid": pid}
                samples.append(sample)
            except (FileNotFoundError, TypeError, ProcessLookupError):
                pass
            stop.wait(1)

    idle_pid = server.process.pid
    baseline = {"fds": fds(idle_pid), "threads": proc(idle_pid, "Threads")}
    threading.Thread(target=sampler, daemon=True).start()
    workers = [threading.Thread(target=soak.worker) for _ in range(args.clients)]
    started = time.time()
    for t in workers:
        t.start()
    killed_at = None
    if args.kill_at > 0:
        while soak.next_job < args.requests * args.kill_at:
            time.sleep(0.05)
        soak.back.clear()
        soak.restarting.set()
        server.kill()
        killed_at = time.time()
        server.start()
        soak.restarting.clear()
        soak.back.set()
        if samples:
            samples[-1]["restarted"] = True
    for t in workers:
        t.join()
    load_s = time.time() - started
    # Let abandoned sessions expire, then compare with the level before the load.
    time.sleep(2 * args.idle + 2)
    pid = server.process.pid
    after = {"fds": fds(pid), "threads": proc(pid, "Threads"),
             "open_sessions": server.metric("qwen3guard_open_sessions")}
    stop.set()
    time.sleep(1.1)
    second = [s for s in samples if s["pid"] == pid]
    warm = (args.requests * args.kill_at if killed_at else 0) + args.warmup
    settled = [s for s in second if s["jobs"] >= warm]
    steady = [l for t, l in soak.latencies if settled and t >= settled[0]["t"]]
    growth = None
    if len(settled) >= 2:
        growth = round(100 * (settled[-1]["rss_mib"] - settled[0]["rss_mib"]) / settled[0]["rss_mib"], 1)
    all_latencies = [l for _, l in soak.latencies]
    summary = {
        "jobs": args.requests, "clients": args.clients, "load_s": round(load_s, 1),
        "counts": soak.counts, "valid_requests_ok": len(all_latencies),
        "valid_request_failures": len(soak.failures), "failures": soak.failures[:20],
        "malformed_sent": soak.malformed["sent"], "malformed_not_4xx": soak.malformed["bad"][:20],
        "restart_window_misses": soak.restart_misses, "killed": killed_at is not None,
        "p50_ms": round(1000 * percentile(all_latencies, 0.5), 1),
        "p99_ms": round(1000 * percentile(all_latencies, 0.99), 1),
        "p99_after_warmup_ms": round(1000 * percentile(steady, 0.99), 1) if steady else None,
        "rss_first_settled_mib": settled[0]["rss_mib"] if settled else None,
        "rss_last_mib": settled[-1]["rss_mib"] if settled else None,
        "rss_growth_percent": growth,
        "baseline": baseline, "after": after,
    }
    with open(os.path.join(args.out, "samples.jsonl"), "w") as f:
        for s in samples:
            f.write(json.dumps(s) + "\n")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    svg(samples, os.path.join(args.out, "soak.svg"))
    server.process.terminate()
    server.process.wait()
    print(json.dumps(summary, indent=2))
    ok = (not soak.failures and not soak.malformed["bad"] and after["open_sessions"] == 0
          and after["fds"] <= baseline["fds"] + 2 and after["threads"] <= baseline["threads"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
