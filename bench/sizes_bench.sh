#!/usr/bin/env bash
# The larger sizes (4B, 8B): `qwen3guard bench` on random checkpoints of the published
# shapes, side by side with llama.cpp's llama-bench on GGUF conversions of the same Gen
# weights, 2 threads each. Writes bench/results/<date>-<SIZE>/ (one JSON per tool, dtype
# and figure, plus /usr/bin/time's report with the peak resident memory of each process).
#
#   SIZE=4B bench/sizes_bench.sh
#
# Environment: SIZE (4B), MODELS (/work/models: where the checkpoints and GGUF files go;
# a 4B pair takes 16 GB in bf16, an 8B pair 33 GB, plus the GGUF files), BIN
# (target/release/qwen3guard), LLAMA_SRC (the llama.cpp source vendored in llama-cpp-python),
# LLAMA_BUILD (a CMake build folder of it; configured here with -DGGML_NATIVE=ON, so that
# llama-bench uses every instruction set the machine has), PY (a python with numpy),
# RUNS (2), OUT, PRUNE (0; 1 deletes the Stream checkpoint once it is measured and each
# GGUF file once llama-bench has run on it, so that an 8B run needs 33 GB of free disk at
# its peak instead of 58), CMAKE (cmake; `bench/setup_llama.sh` puts one in its venv),
# ONLY (both; `qwen3guard` or `llama` runs one side, to redo it into the same OUT), DTYPES
# (`bf16 q8`; f32 too for 0.6B), LLAMA_FLAGS (`-DGGML_NATIVE=ON`: llama.cpp's instruction
# sets), BLAS (0; 1 also times numpy's OpenBLAS on the backbone's f32 products with PY,
# bench/blas_anchor.py, honouring OPENBLAS_CORETYPE).
#
# An AVX2 stand-in on an AVX-512 processor caps all three tools at AVX2 + FMA:
#   SIZE=0.6B DTYPES="f32 bf16 q8" QWEN3GUARD_ISA=avx2 OPENBLAS_CORETYPE=Haswell BLAS=1 \
#   LLAMA_BUILD=/work/llbuild-avx2/build LLAMA_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON \
#   -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" OUT=bench/results/<date>-avx2cap-0.6B \
#   bench/sizes_bench.sh
#
# llama.cpp's figures are its llama-bench's: prefill `-p 512`; a decoding step after 128,
# 512 and 2,048 tokens of context `-n 8 -d 128,512,2048` (llama.cpp has no Stream heads; as
# for 0.6B, the Stream token is compared with the Gen decode step of the same backbone);
# the verdict forward `-p 115 -d 201`: the 113 tokens of the `bench` prompt after its
# 201-token preamble, plus `Safety:`, on top of the cached preamble.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-4B}
MODELS=${MODELS:-/work/models}
BIN=${BIN:-target/release/qwen3guard}
LLAMA_SRC=${LLAMA_SRC:-$HOME/.cache/qwen3guard/llama-0.3.36/llama_cpp_python-0.3.36/vendor/llama.cpp}
LLAMA_BUILD=${LLAMA_BUILD:-/work/llbuild/build}
PY=${PY:-python3}
RUNS=${RUNS:-2}
PRUNE=${PRUNE:-0}
CMAKE=${CMAKE:-cmake}
ONLY=${ONLY:-both}
DTYPES=${DTYPES:-bf16 q8}
LLAMA_FLAGS=${LLAMA_FLAGS:--DGGML_NATIVE=ON}
BLAS=${BLAS:-0}
OUT=${OUT:-bench/results/$(date +%Y-%m-%d)-$SIZE}
mkdir -p "$OUT"

for variant in gen stream; do
  [ "$ONLY" = llama ] && [ "$variant" = stream ] && continue
  dir="$MODELS/$variant-$SIZE"
  [ -s "$dir/config.json" ] || "$BIN" make-random --variant "$variant" --size "$SIZE" --out "$dir"
done
{ echo "date: $(date -u +%FT%TZ)"; echo "commit: $(git rev-parse HEAD)"
  lscpu | grep -E '^(Model name|CPU\(s\)|CPU family|Model|Hypervisor vendor):'
  echo "simd: $(grep -o 'avx[^ ]*\|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "kernels: $($BIN --version)"; echo "threads: 2"
  echo "isa cap: ${QWEN3GUARD_ISA:-none}"; echo "llama.cpp flags: $LLAMA_FLAGS"
  echo "openblas coretype: ${OPENBLAS_CORETYPE:-detected}"
  echo "openblas l2 size: ${OPENBLAS_L2_SIZE:-detected}"  # some machines here set both
} > "$OUT/machine$([ "$ONLY" = llama ] && echo -llama).txt"  # the llama-only redo keeps ours

for variant in gen stream; do
  [ "$ONLY" = llama ] && break
  for dtype in $DTYPES; do
    /usr/bin/time -v "$BIN" bench --model "$MODELS/$variant-$SIZE" --dtype "$dtype" --threads 2 \
      --runs "$RUNS" --json > "$OUT/qwen3guard-$variant-$dtype.json" 2> "$OUT/qwen3guard-$variant-$dtype.time"
  done
  # The GGUF files are made from the Gen checkpoint only.
  if [ "$PRUNE" = 1 ] && [ "$variant" = stream ]; then rm -rf "$MODELS/stream-$SIZE"; fi
done

# The f32 anchor belongs to neither side, so it runs with either.
if [ "$BLAS" = 1 ]; then
  "$PY" bench/blas_anchor.py --tokens 512 --threads 2 --max-wait 0 > "$OUT/blas.json"
fi
[ "$ONLY" = qwen3guard ] && { echo "results in $OUT; its page: python3 bench/sizes_report.py $OUT"; exit 0; }
# shellcheck disable=SC2086 # LLAMA_FLAGS is a list of flags
"$CMAKE" -S "$LLAMA_SRC" -B "$LLAMA_BUILD" -DCMAKE_BUILD_TYPE=Release $LLAMA_FLAGS \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF > "$OUT/llama-build.log" 2>&1
"$CMAKE" --build "$LLAMA_BUILD" --target llama-bench -j"$(nproc)" >> "$OUT/llama-build.log" 2>&1
bench="$LLAMA_BUILD/bin/llama-bench"
for dtype in $DTYPES; do
  type=${dtype/#q8/q8_0}
  gguf="$MODELS/gen-$SIZE-$type.gguf"
  [ -s "$gguf" ] || PYTHONPATH="$LLAMA_SRC/gguf-py" "$PY" ../shared/tools/to_gguf.py \
    "$MODELS/gen-$SIZE" "$gguf" "$type"
  run() {  # figure, llama-bench arguments
    local figure=$1; shift
    /usr/bin/time -v "$bench" -m "$gguf" -t 2 -r "$RUNS" -o json "$@" \
      > "$OUT/llama-$type-$figure.json" 2> "$OUT/llama-$type-$figure.time"
  }
  run prefill -p 512 -n 0
  run verdict -p 115 -n 0 -d 201
  run decode -p 0 -n 8 -d 128,512,2048
  if [ "$PRUNE" = 1 ]; then rm -f "$gguf"; fi
done
echo "results in $OUT; its page: python3 bench/sizes_report.py $OUT"
