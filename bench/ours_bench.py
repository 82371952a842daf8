#!/usr/bin/env python3
"""Runs `qwen3guard bench` on each checkpoint and dtype after waiting for a quiet machine,
and prints one JSON object: {"parts": {"gen-f32": {...}, ...}} with the tool's own JSON plus
the machine's load before and after each run.

    python3 bench/ours_bench.py --bin target/release/qwen3guard \
        --gen /work/models/gen-0.6B --stream /work/models/stream-0.6B --dtypes f32,bf16 --threads 2 --runs 5
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import measured_part  # noqa: E402


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
            cmd = [args.bin, "bench", "--model", path, "--dtype", dtype, "--threads", str(args.threads),
                   "--runs", str(args.runs), "--json"]
            report["parts"][f"{model}-{dtype}"] = measured_part(
                cmd, args.max_load, args.max_wait, f"qwen3guard {model} {dtype}", command=" ".join(cmd))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
