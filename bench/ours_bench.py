#!/usr/bin/env python3
"""Runs `qwen3guard bench` on each checkpoint and dtype after waiting for a quiet machine,
and prints one JSON object: {"parts": {"gen-f32": {...}, ...}} with the tool's own JSON plus
the machine's load before and after each run.

    python3 bench/ours_bench.py --bin target/release/qwen3guard \
        --gen /work/models/gen-0.6B --stream /work/models/stream-0.6B --dtypes f32,bf16 --threads 2 --runs 5
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import wait_quiet  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/qwen3guard")
    ap.add_argument("--gen", default="/work/models/gen-0.6B")
    ap.add_argument("--stream", default="/work/models/stream-0.6B")
    ap.add_argument("--dtypes", default="f32,bf16,q8")
    ap.add_argument("--models", default="gen,stream")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-load", type=float, default=0.7)
    ap.add_argument("--max-wait", type=int, default=1200)
    args = ap.parse_args()
    report = {"tool": "qwen3guard", "threads": args.threads, "runs": args.runs, "parts": {}}
    for model, path in (("gen", args.gen), ("stream", args.stream)):
        if model not in args.models.split(","):
            continue
        for dtype in args.dtypes.split(","):
            quiet = wait_quiet(args.max_load, max_wait_s=args.max_wait)
            cmd = [args.bin, "bench", "--model", path, "--dtype", dtype, "--threads", str(args.threads),
                   "--runs", str(args.runs), "--json"]
            t = time.time()
            p = subprocess.run(cmd, capture_output=True, text=True)
            entry = {"command": " ".join(cmd), "machine": quiet, "load1_at_end": round(os.getloadavg()[0], 2),
                     "wall_s": round(time.time() - t, 1)}
            if p.returncode == 0:
                entry.update(json.loads(p.stdout.strip().splitlines()[-1]))
            else:
                entry["error"] = (p.stderr.strip() or f"exit {p.returncode}").splitlines()[-1]
                print(p.stderr, file=sys.stderr)
            report["parts"][f"{model}-{dtype}"] = entry
            print(f"qwen3guard {model} {dtype}: {json.dumps(entry)[:300]}", file=sys.stderr)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
