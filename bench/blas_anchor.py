#!/usr/bin/env python3
"""The machine's own yardstick for f32 prefill: how fast OpenBLAS (numpy's) runs the weight
products of the Qwen3 0.6B backbone, with the same thread count as the other tools.

For each token count N, the seven products of one layer (q, k, v, o, gate, up, down:
(N, 1024) x (1024, 2048 | 1024 | 1024), (N, 2048) x (2048, 1024), (N, 1024) x (1024, 3072) twice,
(N, 3072) x (3072, 1024)) are timed (median of RUNS after a warm-up), summed and scaled to 28
layers: the time a prefill would take if it were nothing but OpenBLAS products. Its rate,
counting 2 x 0.44 G backbone parameters per token, is the anchor of the kernels issue
(our f32 prefill at least 75 % of it). Attention, norms and the rest are not in it, so the
anchor is generous to OpenBLAS.

    OPENBLAS_NUM_THREADS=2 python bench/blas_anchor.py --tokens 128,512 --runs 7 > blas.json
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import wait_quiet  # noqa: E402

HIDDEN, INTERMEDIATE, Q_DIM, KV_DIM, LAYERS = 1024, 3072, 2048, 1024, 28
# (input features, output features) of each weight product in one layer
PRODUCTS = [(HIDDEN, Q_DIM), (HIDDEN, KV_DIM), (HIDDEN, KV_DIM), (Q_DIM, HIDDEN),
            (HIDDEN, INTERMEDIATE), (HIDDEN, INTERMEDIATE), (INTERMEDIATE, HIDDEN)]
PARAMS = LAYERS * sum(k * n for k, n in PRODUCTS)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="128,512")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-load", type=float, default=0.7)
    ap.add_argument("--max-wait", type=int, default=1200)
    args = ap.parse_args()
    # OpenBLAS reads its thread count when it loads, so it is set before numpy is imported.
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    import numpy as np

    machine = wait_quiet(args.max_load, max_wait_s=args.max_wait)
    rng = np.random.default_rng(0)
    out = {"threads": args.threads, "backbone_params": PARAMS, "numpy": np.__version__,
           "blas": str(np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {}).get("name")),
           "machine": machine, "tokens": {},
           # What overrides OpenBLAS's own choice of kernel and cache blocking: some machines
           # here set both in every process's environment.
           "overrides": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                         if k in os.environ}}
    for n in (int(t) for t in args.tokens.split(",")):
        total = 0.0
        for k, m in PRODUCTS:
            a = rng.standard_normal((n, k), dtype=np.float32)
            b = rng.standard_normal((k, m), dtype=np.float32)
            a @ b
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                a @ b
                times.append(time.perf_counter() - t)
            total += sorted(times)[len(times) // 2]
        seconds = total * LAYERS
        out["tokens"][str(n)] = {"products_s": seconds, "tokens_per_s": n / seconds,
                                 "gflops": 2 * PARAMS * n / seconds / 1e9}
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
