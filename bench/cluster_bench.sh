#!/usr/bin/env bash
# The scale-out figures of docs/DEPLOY.md, in one run on one machine: stream-append
# throughput of 1, 2 and 3 `qwen3guard serve` replicas behind nginx (the committed
# deploy/nginx/qwen3guard.conf, routing by x-qwen3guard-session), one replica without
# nginx beside them, and the cost of replaying a lost session (re-opening it with its
# partial response: one prefill) at 128, 1,024 and 4,096 tokens.
#
#   bench/cluster_bench.sh
#
# Environment: BIN (target/release/qwen3guard), STREAM (a random 0.6B Stream checkpoint from
# `qwen3guard make-random --variant stream --size 0.6B`), DTYPE (bf16), CORES (the cores
# the replicas share; each of R replicas gets CORES/R kernel threads, at least one),
# SESSIONS ("8,32"), TOKENS (32 appends per session), NGINX (/usr/sbin/nginx),
# OUT (bench/results/<date>-cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/qwen3guard}
STREAM=${STREAM:-/work/models/stream-0.6B}
DTYPE=${DTYPE:-bf16}
CORES=${CORES:-$(nproc)}
SESSIONS=${SESSIONS:-8,32}
TOKENS=${TOKENS:-32}
NGINX=${NGINX:-/usr/sbin/nginx}
OUT=${OUT:-bench/results/$(date +%Y-%m-%d)-cluster}
BASE=${BASE:-18400}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: nginx resolves paths against its own prefix
load() { python3 bench/serve_load.py "$@"; }

{ echo "date: $(date -u +%FT%TZ)"; echo "commit: $(git rev-parse HEAD)"
  lscpu | grep -E '^(Model name|CPU\(s\)|Hypervisor vendor)'
  echo "simd: $(grep -o 'avx[^ ]*\|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "kernels: $($BIN --version)"; echo "dtype: $DTYPE"; echo "cores shared: $CORES"
  echo "nginx: $($NGINX -v 2>&1)"; } > "$OUT/machine.txt"

pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap stop_all EXIT

source bench/wait_ready.sh

start_replicas() {  # count
  local count=$1 threads=$(( CORES / $1 ))
  (( threads < 1 )) && threads=1
  for i in $(seq "$count"); do
    RAYON_NUM_THREADS=$threads "$BIN" serve --stream-model "$STREAM" --dtype "$DTYPE" \
      --host 127.0.0.1 --port $((BASE + i)) --replica-id "r$i" --threads "$threads" \
      2> "$OUT/serve-$count-r$i.log" &
    pids+=($!)
  done
  for i in $(seq "$count"); do wait_ready "http://127.0.0.1:$((BASE + i))/health"; done
}

start_nginx() {  # count
  local dir="$OUT/nginx-$1"; mkdir -p "$dir/logs" "$dir/tmp"
  awk -v n="$1" -v base="$BASE" '
    /^ *upstream / { up = 1 }
    up && /^ *server / { if (!done) { for (i = 1; i <= n; i++) printf "    server 127.0.0.1:%d max_fails=1 fail_timeout=60s;\n", base + i; done = 1 } next }
    up && /^ *}/ { up = 0 }
    /^ *listen / { printf "    listen 127.0.0.1:%d;\n", base; next }
    { print }' deploy/nginx/qwen3guard.conf > "$dir/qwen3guard.conf"
  cat > "$dir/nginx.conf" <<EOF
daemon off; worker_processes 1; pid $dir/nginx.pid; error_log $dir/logs/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi; uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;
  include $dir/qwen3guard.conf; }
EOF
  "$NGINX" -p "$dir" -c "$dir/nginx.conf" &
  pids+=($!)
  wait_ready "http://127.0.0.1:$BASE/live"
}

for count in 1 2 3; do
  start_replicas "$count"
  if [ "$count" = 1 ]; then
    load stream --url "http://127.0.0.1:$((BASE + 1))" --sessions "$SESSIONS" --tokens "$TOKENS" |
      sed 's/^{/{"replicas": 1, "router": "none", /' >> "$OUT/throughput.jsonl"
    load replay --url "http://127.0.0.1:$((BASE + 1))" --lengths 128,1024,4096 > "$OUT/replay.jsonl"
  fi
  start_nginx "$count"
  load stream --url "http://127.0.0.1:$BASE" --sessions "$SESSIONS" --tokens "$TOKENS" |
    sed "s/^{/{\"replicas\": $count, \"router\": \"nginx\", /" >> "$OUT/throughput.jsonl"
  stop_all
done
cat "$OUT/throughput.jsonl" "$OUT/replay.jsonl"
