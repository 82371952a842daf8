#!/usr/bin/env bash
# The engine's kernel paths side by side on this processor, in one run: a random-weight
# 0.6B Stream checkpoint, prefill of LEN tokens and one appended token after LEN, for each
# precision and each instruction set the processor has (QWEN3GUARD_ISA caps it).
# Usage: bench/isa_compare.sh [OUT_DIR] [LEN]   (needs `cargo build --release --examples`)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/qwen3guard-isa}
len=${2:-128}
bin=target/release
mkdir -p "$out"
[ -f "$out/stream/config.json" ] || "$bin/qwen3guard" make-random --variant stream --size 0.6B --out "$out/stream"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;" \
    "SIMD: $(grep -o 'avx[^ ]*\|fma' /proc/cpuinfo | sort -u | xargs)"
for isa in ${ISAS:-avx512 avx2 portable}; do
    echo "== QWEN3GUARD_ISA=$isa: $(QWEN3GUARD_ISA=$isa "$bin/qwen3guard" --version)"
    for dtype in f32 bf16 q8; do
        echo "-- $dtype"
        QWEN3GUARD_ISA=$isa "$bin/examples/stream_timing" "$out/stream" "$dtype" "$len" "${PREFILL_REPS:-3}"
        QWEN3GUARD_ISA=$isa "$bin/examples/stream_timing" "$out/stream" "$dtype" "$len" "${DECODE_REPS:-9}" decode
    done
done
