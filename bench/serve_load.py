#!/usr/bin/env python3
"""Load generator for `qwen3guard serve` and, for comparison, llama.cpp's `llama-server`.

Closed-loop clients (each sends its next request when the last one is answered) over
keep-alive HTTP/1.1 connections, standard library only. Prints one JSON object per run.

  serve_load.py overhead --url URL [--requests 21]   (the request `qwen3guard bench` times)
  serve_load.py gen    --url URL [--verdict-only] [--max-new-tokens 8] --concurrency 1,8,32 --requests N
  serve_load.py llama  --url URL --ids FILE.jsonl [--n-predict 8] --concurrency 1,8,32 --requests N
  serve_load.py stream --url URL --sessions 1,32 --tokens N   (each session sends its own x-qwen3guard-session, for routers)
  serve_load.py replay --url URL --lengths 128,1024,4096 [--runs 3]   (re-opening a lost session: one prefill)
  serve_load.py churn  --url URL --pid PID --requests N --sessions N [--step N] [--warmup N] [--rest S]  (resident memory)
  serve_load.py prompts --count N          (the prompts, one JSON string per line)

`gen` and `llama` send the same prompts: `llama` reads their token ids (rendered by
`qwen3guard render --json`, so both servers see the same tokens) and asks for
`--n-predict` greedy tokens, the work a verdict of that many tokens costs.
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

PROMPT_TOPICS = ["bake bread", "pick a lock", "fix a bike", "make a bomb", "write a poem",
                 "hack a phone", "grow tomatoes", "cheat on a test"]


def prompts(count):
    """Short, distinct prompts of about 20 tokens."""
    return [f"Question {i}: how do I {PROMPT_TOPICS[i % len(PROMPT_TOPICS)]} at home, step by step?"
            for i in range(count)]


class Client:
    """One keep-alive connection."""

    def __init__(self, url, timeout=600):
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.timeout = timeout
        self.conn = None

    def post(self, path, body, headers=None):
        data = json.dumps(body).encode()
        headers = {"content-type": "application/json", **(headers or {})}
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, data, headers)
                response = self.conn.getresponse()
                payload = response.read()
                return response.status, payload
            except (http.client.HTTPException, ConnectionError):
                # A server may close an idle keep-alive connection; reconnect once.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")


def percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[k]


def closed_loop(url, make_body, path, concurrency, total):
    """`total` requests from `concurrency` clients; throughput and latency percentiles."""
    lock = threading.Lock()
    next_index = [0]
    latencies, errors = [], []

    def worker():
        client = Client(url)
        while True:
            with lock:
                i = next_index[0]
                if i >= total:
                    return
                next_index[0] += 1
            started = time.perf_counter()
            try:
                status, payload = client.post(path, make_body(i))
            except (OSError, http.client.HTTPException) as e:
                # A timed-out or refused request is an error of the run, not the end of
                # this client: count it and go on with a fresh connection.
                status, payload = None, repr(e).encode()
                client.conn = None
            elapsed = time.perf_counter() - started
            with lock:
                if status == 200:
                    latencies.append(elapsed)
                else:
                    errors.append((status, payload[:200].decode(errors="replace")))

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": total, "errors": len(errors),
            "first_error": errors[0] if errors else None, "wall_s": round(wall, 3),
            "requests_per_s": round(len(latencies) / wall, 3),
            "p50_ms": round(1000 * percentile(latencies, 0.5), 1) if latencies else None,
            "p99_ms": round(1000 * percentile(latencies, 0.99), 1) if latencies else None}


def run_gen(args):
    texts = prompts(args.prompts)
    body = lambda i: {"messages": [{"role": "user", "content": texts[i % len(texts)]}],
                      "verdict_only": args.verdict_only, "max_new_tokens": args.max_new_tokens}
    # One warm-up request per client count: the preamble cache and the first allocations.
    Client(args.url).post("/v1/guard", body(0))
    for c in args.concurrency:
        result = closed_loop(args.url, body, "/v1/guard", c, args.requests or 4 * c)
        result.update(server="qwen3guard", verdict_only=args.verdict_only,
                      max_new_tokens=args.max_new_tokens)
        print(json.dumps(result), flush=True)


# The prompt of `qwen3guard bench`, so that the server's figure and the library's are of
# the same request.
BENCH_PROMPT = "How can I make a bomb at home with things I can buy at a hardware store?"


def run_overhead(args):
    """`/v1/guard` at concurrency 1 on the request `qwen3guard bench` times in-process."""
    for name, verdict_only, max_new in [("prompt_warm_ms", False, 8), ("verdict_only_ms", True, 0)]:
        body = lambda i: {"messages": [{"role": "user", "content": BENCH_PROMPT}],
                          "verdict_only": verdict_only, "max_new_tokens": max_new}
        Client(args.url).post("/v1/guard", body(0))
        result = closed_loop(args.url, body, "/v1/guard", 1, args.requests)
        result.update(server="qwen3guard", figure=name)
        print(json.dumps(result), flush=True)


def run_llama(args):
    ids = [json.loads(line)["token_ids"] for line in open(args.ids)]
    body = lambda i: {"prompt": ids[i % len(ids)], "n_predict": args.n_predict, "temperature": 0,
                      "top_k": 1, "cache_prompt": True, "ignore_eos": True}
    Client(args.url).post("/completion", body(0))
    for c in args.concurrency:
        result = closed_loop(args.url, body, "/completion", c, args.requests or 4 * c)
        result.update(server="llama-server", n_predict=args.n_predict)
        print(json.dumps(result), flush=True)


def run_stream(args):
    """Each client opens a session and appends one token at a time."""
    token = 1234  # a plain word piece; the cost does not depend on which id
    for sessions in args.sessions:
        lock = threading.Lock()
        per_token, errors = [], []
        barrier = threading.Barrier(sessions + 1)

        def worker(i):
            client = Client(args.url)
            key = {"x-qwen3guard-session": f"bench-{sessions}-{i}"}
            status, payload = client.post("/v1/stream/sessions", {"messages": [
                {"role": "user", "content": "Tell me a story about a dragon."}]}, key)
            sid = json.loads(payload)["id"] if status == 201 else None
            barrier.wait()
            if sid is None:
                errors.append(status)
                return
            for n in range(args.tokens):
                started = time.perf_counter()
                status, _ = client.post(f"/v1/stream/sessions/{sid}/append",
                                        {"token_ids": [token], "offset": n}, key)
                elapsed = time.perf_counter() - started
                with lock:
                    (per_token.append(elapsed) if status == 200 else errors.append(status))
            client.conn.request("DELETE", f"/v1/stream/sessions/{sid}", headers=key)
            client.conn.getresponse().read()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(sessions)]
        for t in threads:
            t.start()
        barrier.wait()
        started = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        print(json.dumps({"server": "qwen3guard", "sessions": sessions, "tokens_each": args.tokens,
                          "errors": len(errors), "wall_s": round(wall, 3),
                          "tokens_per_s": round(len(per_token) / wall, 2),
                          "p50_ms": round(1000 * percentile(per_token, 0.5), 1),
                          "p99_ms": round(1000 * percentile(per_token, 0.99), 1)}), flush=True)


def run_replay(args):
    """What re-opening a lost session costs: an open with the conversation and a partial
    response of about N tokens (words of one token each), timed to its answer."""
    client = Client(args.url)
    for length in args.lengths:
        partial = " ".join(f"w{i % 10}" for i in range(length // 2))
        body = {"messages": [{"role": "user", "content": "Tell me a story about a dragon."},
                             {"role": "assistant", "content": partial}]}
        times, tokens = [], None
        for _ in range(args.runs):
            started = time.perf_counter()
            status, payload = client.post("/v1/stream/sessions", body)
            times.append(time.perf_counter() - started)
            if status != 201:
                raise SystemExit(f"open answered {status}: {payload[:200]}")
            opened = json.loads(payload)
            tokens = len(opened["tokens"])
            client.conn.request("DELETE", f"/v1/stream/sessions/{opened['id']}")
            client.conn.getresponse().read()
        print(json.dumps({"server": "qwen3guard", "partial_tokens": tokens, "runs": args.runs,
                          "median_s": round(statistics.median(times), 3),
                          "tokens_per_s": round(tokens / statistics.median(times), 1)}), flush=True)


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def run_churn(args):
    """Resident memory after warm-up, along many requests, along many sessions, and after the
    server has been idle for a few seconds (it hands freed memory back when idle): a leak
    keeps climbing step after step, allocator slack levels off and goes at rest."""
    texts = prompts(64)
    body = lambda i: {"messages": [{"role": "user", "content": texts[i % 64]}],
                      "verdict_only": True, "max_new_tokens": 8}
    closed_loop(args.url, body, "/v1/guard", 8, args.warmup)
    time.sleep(args.rest)
    settled = rss_mib(args.pid)
    curve, request_errors, done, started = [], 0, 0, time.perf_counter()
    while done < args.requests:
        step = min(args.step, args.requests - done)
        request_errors += closed_loop(args.url, body, "/v1/guard", 32, step)["errors"]
        done += step
        curve.append({"requests": done, "rss_mib": rss_mib(args.pid)})
        print(json.dumps(curve[-1]), file=sys.stderr, flush=True)  # progress of a long run
    requests_per_s = args.requests / (time.perf_counter() - started)
    time.sleep(args.rest)
    requests_at_rest = rss_mib(args.pid)
    client, errors, session_curve = Client(args.url), 0, []
    for n in range(args.sessions):
        status, payload = client.post("/v1/stream/sessions", {"messages": [
            {"role": "user", "content": texts[n % 64]}]})
        if status != 201:
            errors += 1
            continue
        sid = json.loads(payload)["id"]
        status, _ = client.post(f"/v1/stream/sessions/{sid}/append", {"token_ids": [1234] * 16})
        errors += status != 200
        client.conn.request("DELETE", f"/v1/stream/sessions/{sid}")
        response = client.conn.getresponse()
        response.read()
        errors += response.status != 204
        if (n + 1) % max(1, args.step // 4) == 0 or n + 1 == args.sessions:
            session_curve.append({"sessions": n + 1, "rss_mib": rss_mib(args.pid)})
    time.sleep(args.rest)
    print(json.dumps({"server": "qwen3guard", "rss_settled_mib": settled,
                      "rss_after_requests_mib": curve[-1]["rss_mib"] if curve else settled,
                      "rss_requests_at_rest_mib": requests_at_rest, "requests": args.requests,
                      "request_errors": request_errors, "requests_per_s": round(requests_per_s, 2),
                      "request_curve": curve,
                      "rss_after_sessions_mib": session_curve[-1]["rss_mib"] if session_curve else None,
                      "rss_sessions_at_rest_mib": rss_mib(args.pid), "sessions": args.sessions,
                      "session_errors": errors, "session_curve": session_curve,
                      "rest_s": args.rest}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    counts = lambda s: [int(x) for x in s.split(",")]
    g = sub.add_parser("gen")
    g.add_argument("--url", required=True)
    g.add_argument("--verdict-only", action="store_true")
    g.add_argument("--max-new-tokens", type=int, default=8)
    g.add_argument("--prompts", type=int, default=64)
    g.add_argument("--concurrency", type=counts, default=[1, 8, 32])
    g.add_argument("--requests", type=int, default=0, help="per run (default 4 x concurrency)")
    l = sub.add_parser("llama")
    l.add_argument("--url", required=True)
    l.add_argument("--ids", required=True)
    l.add_argument("--n-predict", type=int, default=8)
    l.add_argument("--concurrency", type=counts, default=[1, 8, 32])
    l.add_argument("--requests", type=int, default=0)
    o = sub.add_parser("overhead")
    o.add_argument("--url", required=True)
    o.add_argument("--requests", type=int, default=21)
    s = sub.add_parser("stream")
    s.add_argument("--url", required=True)
    s.add_argument("--sessions", type=counts, default=[1, 32])
    s.add_argument("--tokens", type=int, default=32)
    r = sub.add_parser("replay")
    r.add_argument("--url", required=True)
    r.add_argument("--lengths", type=counts, default=[128, 1024, 4096])
    r.add_argument("--runs", type=int, default=3)
    c = sub.add_parser("churn")
    c.add_argument("--url", required=True)
    c.add_argument("--pid", type=int, required=True)
    c.add_argument("--requests", type=int, default=10000)
    c.add_argument("--sessions", type=int, default=1000)
    c.add_argument("--step", type=int, default=1000, help="requests between two readings (sessions: a quarter)")
    c.add_argument("--warmup", type=int, default=200, help="requests before the settled reading")
    c.add_argument("--rest", type=float, default=3.0, help="idle seconds before an at-rest reading")
    p = sub.add_parser("prompts")
    p.add_argument("--count", type=int, default=64)
    args = parser.parse_args()
    if args.mode == "prompts":
        for text in prompts(args.count):
            print(json.dumps(text))
        return
    {"gen": run_gen, "overhead": run_overhead, "llama": run_llama, "stream": run_stream,
     "replay": run_replay, "churn": run_churn}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
