#!/usr/bin/env python3
"""The guarded proxy's figures (docs/PROXY.md), standard library only.

A scripted OpenAI-compatible upstream streams one word per chunk at a fixed pace, each
chunk stamped with the time it was sent (`x_sent`); clients read the same answers from
the upstream directly and through `qwen3guard serve --upstream` (held and async release),
and the added latency of each streamed chunk is its arrival time through the proxy less
the upstream's stamp, against the same measured directly.

  proxy_bench.py latency --bin BIN --stream MODEL [--dtype q8] [--concurrency 1,16]
                         [--tokens 64] [--pace-ms 50]
  proxy_bench.py leakage --bin BIN --stream CONSTRUCTED   (flagged answers: what reached
                         the client from the cut on, per release mode and hold-back;
                         wait tokens of an intervention)

Prints one JSON object per run.
"""
import argparse
import http.client
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

BENIGN_WORDS = ("the quiet morning light fell across a small garden where bees moved "
                "between the flowers and a cat slept near the warm stones").split()
# For the constructed checkpoint: " bomb kill" is the first flagged pair.
UNSAFE = "It was calm. Then came the bomb kill order, and we left at dawn before the rain."
SAFE_CONTINUATION = " Then we had a quiet dinner and went to sleep."


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pace, tokens):
        self.pace, self.tokens = pace, tokens
        super().__init__(("127.0.0.1", free_port()), UpstreamHandler)


class UpstreamHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_json({"object": "list", "data": [{"id": "scripted"}]})

    def send_json(self, value):
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        script = body.get("x_script", "benign")
        if script == "benign":
            words = [(" " if i else "") + BENIGN_WORDS[i % len(BENIGN_WORDS)]
                     for i in range(self.server.tokens)]
        else:
            text = SAFE_CONTINUATION if body.get("continue_final_message") else UNSAFE
            words = [w for w in text.replace(" ", "\0 ").split("\0") if w]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        try:
            for i, word in enumerate(words + [None]):
                time.sleep(self.server.pace)
                delta = {"content": word} if word is not None else {}
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0,
                         "model": "scripted", "x_sent": time.time(),
                         "choices": [{"index": 0, "delta": delta,
                                      "finish_reason": None if word is not None else "stop"}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass


def read_stream(port, body):
    """Streams one answer; returns (delays of content chunks, content, last guard object)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"content-type": "application/json"})
    response = conn.getresponse()
    delays, content, guard = [], "", None
    buffer = b""
    while True:
        line = response.readline()
        if not line:
            break
        buffer += line
        if line not in (b"\n", b"\r\n"):
            continue
        event, buffer = buffer.decode().strip(), b""
        if not event.startswith("data: ") or event == "data: [DONE]":
            continue
        chunk = json.loads(event[6:])
        now = time.time()
        if "qwen3guard" in chunk:
            guard = chunk["qwen3guard"]
        for choice in chunk.get("choices", []):
            text = (choice.get("delta") or {}).get("content")
            if text:
                content += text
                # Chunks the proxy makes itself (a refusal) carry no stamp.
                if "x_sent" in chunk:
                    delays.append(now - chunk["x_sent"])
    conn.close()
    return delays, content, guard


def serve(binary, model, dtype, upstream_port, extra):
    port = free_port()
    args = [binary, "serve", "--stream-model", model, "--dtype", dtype, "--host", "127.0.0.1",
            "--port", str(port), "--upstream", f"http://127.0.0.1:{upstream_port}/v1"] + extra
    process = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    for _ in range(1200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return process, port
        except Exception:
            time.sleep(0.25)
    process.kill()
    sys.exit(f"{binary} serve did not become ready")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def concurrent(port, count, body):
    results = [None] * count

    def one(i):
        results[i] = read_stream(port, body)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def latency(args):
    upstream = Upstream(args.pace_ms / 1000, args.tokens)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    uport = upstream.server_address[1]
    body = {"model": "scripted", "stream": True,
            "messages": [{"role": "user", "content": "Describe a calm morning."}]}
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        direct = [d for r in concurrent(uport, concurrency, body) for d in r[0]]
        base = statistics.median(direct)
        for release in ("held", "async"):
            process, port = serve(args.bin, args.stream, args.dtype, uport,
                                  ["--release", release, "--max-sessions", "256",
                                   "--mode", args.mode])
            try:
                concurrent(port, 1, body)  # warm-up
                runs = concurrent(port, concurrency, body)
            finally:
                process.terminate()
                process.wait()
            delays = [d for r in runs for d in r[0]]
            print(json.dumps({
                "run": "latency", "release": release, "concurrency": concurrency,
                "dtype": args.dtype, "pace_ms": args.pace_ms, "tokens_each": args.tokens,
                "chunks": len(delays),
                "upstream_p50_ms": round(base * 1000, 2),
                "upstream_p99_ms": round(percentile(direct, 99) * 1000, 2),
                "proxy_p50_ms": round(statistics.median(delays) * 1000, 2),
                "proxy_p99_ms": round(percentile(delays, 99) * 1000, 2),
                "added_p50_ms": round((statistics.median(delays) - base) * 1000, 2),
                "added_p99_ms": round((percentile(delays, 99) - percentile(direct, 99)) * 1000, 2),
                "cut_short": sum(1 for r in runs if (r[2] or {}).get("cut_offset") is not None
                                 or (r[2] or {}).get("flagged")),
            }), flush=True)


def leakage(args):
    upstream = Upstream(args.pace_ms / 1000, 0)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    uport = upstream.server_address[1]
    cut = UNSAFE.index(" bomb")
    body = {"model": "scripted", "stream": True, "x_script": "unsafe",
            "messages": [{"role": "user", "content": "Tell me about your day."}]}
    cases = [("held", n) for n in (0, 1, 2, 4, 8)] + [("async", 0)]
    for release, hold_back in cases:
        process, port = serve(args.bin, args.stream, "f32", uport,
                              ["--release", release, "--hold-back", str(hold_back)])
        try:
            _, content, guard = read_stream(port, body)
        finally:
            process.terminate()
            process.wait()
        print(json.dumps({
            "run": "leakage", "release": release, "hold_back": hold_back,
            "cut_offset": guard.get("cut_offset"), "expected_cut": cut,
            "sent_chars": len(content), "leaked_chars": max(0, len(content) - cut),
            "retract": guard.get("retract"),
        }), flush=True)
    process, port = serve(args.bin, args.stream, "f32", uport, ["--intervene", "retries=5"])
    try:
        _, content, guard = read_stream(port, body)
    finally:
        process.terminate()
        process.wait()
    print(json.dumps({"run": "intervention", "retries": guard.get("retries"),
                      "wait_tokens": guard.get("wait_tokens"), "content": content}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("latency", "leakage"):
        p = sub.add_parser(name)
        p.add_argument("--bin", default="target/release/qwen3guard")
        p.add_argument("--stream", required=True)
        p.add_argument("--pace-ms", type=float, default=50)
        if name == "latency":
            p.add_argument("--dtype", default="q8")
            p.add_argument("--concurrency", default="1,16")
            p.add_argument("--tokens", type=int, default=64)
            # Random weights flag at random: loose (Unsafe only) cuts fewer answers short.
            p.add_argument("--mode", default="loose")
    args = parser.parse_args()
    {"latency": latency, "leakage": leakage}[args.command](args)


if __name__ == "__main__":
    main()
