#!/usr/bin/env bash
# The serving figures of docs/SERVING.md, in one run on one machine: qwen3guard serve
# (bf16 and q8) and llama.cpp's llama-server (same GGUF conversion of the same random
# checkpoint, same rendered prompts), then resident memory under churn.
#
#   bench/serve_bench.sh
#
# Environment: BIN (target/release/qwen3guard), GEN and STREAM (random 0.6B checkpoints from
# `qwen3guard make-random`), LLAMA_SERVER (a built llama-server binary), GGUF_BF16 and
# GGUF_Q8 (the Gen checkpoint converted with llama.cpp's convert_hf_to_gguf.py), THREADS (2),
# OUT (bench/results/<date>-serving), DTYPES ("bf16 q8"), PARTS ("library overhead
# inprocess gen stream llama churn"). `inprocess` is the overhead measured in one process
# (crates/qwen3guard-server/examples/overhead.rs: the library call and the HTTP request in
# alternation); `library` and `overhead` time the two paths in two processes, one after
# the other, which differ by more between runs than the overhead they are meant to show.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/qwen3guard}
GEN=${GEN:-/work/models/gen-0.6B}
STREAM=${STREAM:-/work/models/stream-0.6B}
LLAMA_SERVER=${LLAMA_SERVER:-/work/llbuild/bin/llama-server}
GGUF_BF16=${GGUF_BF16:-/work/models/gen-0.6B-bf16.gguf}
GGUF_Q8=${GGUF_Q8:-/work/models/gen-0.6B-q8_0.gguf}
THREADS=${THREADS:-2}
DTYPES=${DTYPES:-bf16 q8}
PARTS=${PARTS:-library overhead inprocess gen stream llama churn}
OUT=${OUT:-bench/results/$(date +%Y-%m-%d)-serving}
PORT=${PORT:-18300}
mkdir -p "$OUT"
load() { python3 bench/serve_load.py "$@"; }
has() { [[ " $PARTS " == *" $1 "* ]]; }

{ echo "date: $(date -u +%FT%TZ)"; echo "commit: $(git rev-parse HEAD)"
  lscpu | grep -E '^(Model name|CPU\(s\)|Hypervisor vendor)'
  echo "simd: $(grep -o 'avx[^ ]*\|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "kernels: $($BIN --version)"; echo "threads: $THREADS"; } > "$OUT/machine.txt"

source bench/wait_ready.sh

# The same prompts' token ids for llama-server.
if has llama && [ ! -s "$OUT/ids.jsonl" ]; then
  load prompts --count 64 | while read -r prompt; do
    "$BIN" render --model "$GEN" --prompt "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]))' "$prompt")" --json
  done > "$OUT/ids.jsonl"
fi

for dtype in $DTYPES; do
  if has library; then
    RAYON_NUM_THREADS=$THREADS "$BIN" bench --model "$GEN" --dtype "$dtype" --runs 10 --json > "$OUT/library-$dtype.json"
  fi
  if has inprocess; then
    cargo build --release -p qwen3guard-server --example overhead
    RAYON_NUM_THREADS=$THREADS target/release/examples/overhead "$GEN" "$dtype" 20 \
      > "$OUT/inprocess-$dtype.jsonl"
  fi
  if has gen || has overhead || has stream || has churn; then
    RAYON_NUM_THREADS=$THREADS "$BIN" serve --gen-model "$GEN" --stream-model "$STREAM" \
      --host 127.0.0.1 --port "$PORT" --dtype "$dtype" --max-batch 32 2> "$OUT/serve-$dtype.log" &
    pid=$!
    wait_ready "http://127.0.0.1:$PORT/health"
    url="http://127.0.0.1:$PORT"
    if has overhead; then
      load overhead --url "$url" --requests 21 > "$OUT/overhead-$dtype.jsonl"
    fi
    if has gen; then
      load gen --url "$url" --concurrency 1 --requests 20 > "$OUT/gen-$dtype.jsonl"
      load gen --url "$url" --concurrency 8,32 --requests 96 >> "$OUT/gen-$dtype.jsonl"
      load gen --url "$url" --verdict-only --max-new-tokens 0 --concurrency 1 --requests 20 >> "$OUT/gen-$dtype.jsonl"
      load gen --url "$url" --verdict-only --max-new-tokens 0 --concurrency 8,32 --requests 128 >> "$OUT/gen-$dtype.jsonl"
    fi
    if has stream; then
      load stream --url "$url" --sessions 1,32 --tokens 24 > "$OUT/stream-$dtype.jsonl"
    fi
    if has churn; then
      load churn --url "$url" --pid "$pid" --requests "${CHURN_REQUESTS:-10000}" \
        --sessions "${CHURN_SESSIONS:-1000}" > "$OUT/churn-$dtype.json"
    fi
    curl -s "$url/metrics" > "$OUT/metrics-$dtype.txt"
    kill -TERM "$pid"; wait "$pid" || true
  fi
  if has llama; then
    gguf=$GGUF_BF16; [ "$dtype" = q8 ] && gguf=$GGUF_Q8
    "$LLAMA_SERVER" -m "$gguf" --host 127.0.0.1 --port $((PORT + 1)) -t "$THREADS" -tb "$THREADS" \
      --parallel 8 --cont-batching -c 8192 --no-webui 2> "$OUT/llama-$dtype.log" &
    lpid=$!
    wait_ready "http://127.0.0.1:$((PORT + 1))/health"
    lurl="http://127.0.0.1:$((PORT + 1))"
    load llama --url "$lurl" --ids "$OUT/ids.jsonl" --n-predict 8 --concurrency 1 --requests 20 > "$OUT/llama-$dtype.jsonl"
    load llama --url "$lurl" --ids "$OUT/ids.jsonl" --n-predict 8 --concurrency 8,32 --requests 96 >> "$OUT/llama-$dtype.jsonl"
    load llama --url "$lurl" --ids "$OUT/ids.jsonl" --n-predict 1 --concurrency 1 --requests 20 >> "$OUT/llama-$dtype.jsonl"
    load llama --url "$lurl" --ids "$OUT/ids.jsonl" --n-predict 1 --concurrency 8,32 --requests 128 >> "$OUT/llama-$dtype.jsonl"
    kill "$lpid"; wait "$lpid" || true
  fi
done
echo "results in $OUT"
