#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 30) with AddressSanitizer, from
# the committed seeds in fuzz/corpus/<target>/; new inputs go to a scratch corpus, crashes
# to fuzz/artifacts/<target>/. Installs cargo-fuzz when missing; the build is kept outside
# the clone (QWEN3GUARD_FUZZ_TARGET, default ~/.cache/qwen3guard/fuzz-target) because a
# sanitized nightly build of the engine is slow. Exit status: non-zero when a target failed.
#
#   fuzz/run.sh 30                 # every target, 30 s each (what CI runs)
#   fuzz/run.sh 600 render config  # chosen targets, 10 minutes each
#
# QWEN3GUARD_FUZZ_LOGS=DIR keeps each target's libFuzzer log as DIR/<target>.log (the
# figures of docs/RELIABILITY.md come from such logs).
set -uo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(render gen_output request_bodies config safetensors retokenize event_stream)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/qwen3guard"
export CARGO_TARGET_DIR=${QWEN3GUARD_FUZZ_TARGET:-$cache/fuzz-target}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install --locked cargo-fuzz || { echo "cannot install cargo-fuzz" >&2; exit 1; }
fi
cargo +nightly fuzz build -O || exit 1
failed=0
for target in "${targets[@]}"; do
    scratch=$(mktemp -d)
    mkdir -p "artifacts/$target" "corpus/$target"
    log=$(mktemp)
    if cargo +nightly fuzz run -O "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -artifact_prefix="artifacts/$target/" \
        >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        failed=1
        tail -40 "$log"
    fi
    stats=$(grep -E '^#[0-9]+' "$log" | tail -1 | awk '{print $1, $2, $NF}')
    echo "fuzz $target: $result after ${seconds}s (${stats:-no stats})"
    if [ -n "${QWEN3GUARD_FUZZ_LOGS:-}" ]; then
        mkdir -p "$QWEN3GUARD_FUZZ_LOGS" && cp "$log" "$QWEN3GUARD_FUZZ_LOGS/$target.log"
    fi
    rm -rf "$scratch" "$log"
done
exit "$failed"
