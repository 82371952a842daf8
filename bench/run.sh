#!/usr/bin/env bash
# Side-by-side benchmark: qwen3guard (f32, bf16, q8) vs PyTorch + transformers vs llama.cpp, on the
# same random-weight 0.6B checkpoints, 2 threads each. Writes bench/results/<date>/*.json and
# regenerates docs/BENCHMARKS.md (+ SVG charts) from them.
#
#   bench/run.sh                      # everything
#   PARTS="ours llamacpp" bench/run.sh  # a subset (ours, reference, llamacpp, blas, report)
#
# Environment: PY (python with torch, transformers, llama-cpp-python, gguf; default
# /work/.refvenv/bin/python), GEN and STREAM (checkpoint dirs), GGUF_DIR (where the GGUF
# conversions go), LLAMA_CPP_SRC (a llama.cpp source tree with convert_hf_to_gguf.py, e.g. the
# one vendored in the llama-cpp-python sdist), THREADS (2), RUNS (5), REF_RUNS (3),
# MAX_LOAD (0.7) and MAX_WAIT (1200 s): each measured run first waits until the 1-minute load
# is below MAX_LOAD and no rustc/cargo runs, for at most MAX_WAIT seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/.refvenv/bin/python}
GEN=${GEN:-/work/models/gen-0.6B}
STREAM=${STREAM:-/work/models/stream-0.6B}
GGUF_DIR=${GGUF_DIR:-/work/models}
LLAMA_CPP_SRC=${LLAMA_CPP_SRC:-/work/llbuild/llama.cpp}
THREADS=${THREADS:-2}
RUNS=${RUNS:-5}
REF_RUNS=${REF_RUNS:-3}
MAX_LOAD=${MAX_LOAD:-0.7}
MAX_WAIT=${MAX_WAIT:-1200}
PARTS=${PARTS:-ours reference llamacpp blas report}
OUT=${OUT:-bench/results/$(date +%Y-%m-%d)}
mkdir -p "$OUT"
wait_args=(--max-load "$MAX_LOAD" --max-wait "$MAX_WAIT")

machine() {
  "$PY" - "$OUT/machine.json" <<'PYEOF'
import json, os, platform, subprocess, sys
lscpu = dict(l.split(":", 1) for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in l)
mem_kb = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")))
flags = lscpu.get("Flags", "").split()
git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
info = {"cpu": lscpu.get("Model name", "").strip(), "cpus": os.cpu_count(),
        "cpu_family": lscpu.get("CPU family", "").strip(), "cpu_model": lscpu.get("Model", "").strip(),
        "threads_per_core": lscpu.get("Thread(s) per core", "").strip(),
        "hypervisor": lscpu.get("Hypervisor vendor", "").strip(),
        "simd": [f for f in flags if f.startswith(("avx", "amx", "fma"))],
        "mem_gib": round(mem_kb / 2**20, 1), "kernel": platform.release(),
        "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip(),
        "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
json.dump(info, open(sys.argv[1], "w"), indent=1)
PYEOF
}

for part in $PARTS; do
  case $part in
    ours)
      cargo build --release -p qwen3guard-cli
      machine
      python3 bench/ours_bench.py --bin target/release/qwen3guard --gen "$GEN" --stream "$STREAM" \
        --threads "$THREADS" --runs "$RUNS" "${wait_args[@]}" > "$OUT/qwen3guard.json"
      ;;
    reference)
      "$PY" bench/reference_bench.py --gen "$GEN" --stream "$STREAM" --dtypes f32,bf16 \
        --threads "$THREADS" --runs "$REF_RUNS" --refeed-runs 3 "${wait_args[@]}" > "$OUT/reference.json"
      ;;
    llamacpp)
      ggufs=()
      for t in f32 bf16 q8_0; do
        f="$GGUF_DIR/$(basename "$GEN")-$t.gguf"
        if [ ! -f "$f" ]; then
          PYTHONPATH="$LLAMA_CPP_SRC/gguf-py" "$PY" "$LLAMA_CPP_SRC/convert_hf_to_gguf.py" "$GEN" \
            --outtype "$t" --outfile "$f"
        fi
        ggufs+=("$f")
      done
      "$PY" bench/llamacpp_bench.py --gguf "${ggufs[@]}" --tokenizer "$GEN" \
        --threads "$THREADS" --runs "$RUNS" "${wait_args[@]}" > "$OUT/llamacpp.json"
      ;;
    blas)
      # numpy's OpenBLAS on the backbone's products: the f32 prefill anchor
      "$PY" bench/blas_anchor.py --threads "$THREADS" --max-load "$MAX_LOAD" --max-wait "$MAX_WAIT" \
        > "$OUT/blas.json"
      ;;
    report)
      # every results folder of a full run (one page each; BENCHMARKS.md names the newest per
      # processor kind)
      python3 bench/report.py bench/results/*/
      ;;
    *) echo "unknown part: $part" >&2; exit 2 ;;
  esac
done
