# Sourced by the serving benchmarks: wait_ready URL polls URL (a server's /health or
# /live) every half second for up to five minutes, and fails saying which URL never
# answered.
wait_ready() {  # url
  for _ in $(seq 600); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "not ready: $1" >&2; return 1
}
