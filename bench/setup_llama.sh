#!/usr/bin/env bash
# Builds llama.cpp's llama-server from the source vendored in the llama-cpp-python sdist on
# PyPI, and converts a Gen checkpoint to GGUF (bf16 and q8_0) with its convert_hf_to_gguf.py,
# for bench/serve_bench.sh. Everything goes under WORK (default /work/llbuild); nothing is
# installed system-wide.
#
#   bench/setup_llama.sh /work/models/gen-0.6B
#
# Needs python3, a C/C++ compiler and make. cmake, torch, transformers and numpy come from
# PyPI into WORK/venv (torch only for the converter).
set -euo pipefail
GEN=${1:?give the Gen checkpoint directory to convert}
WORK=${WORK:-/work/llbuild}
VERSION=${VERSION:-0.3.36}
mkdir -p "$WORK/sdist" "$WORK/bin"
[ -x "$WORK/venv/bin/python" ] || python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q cmake torch numpy safetensors transformers sentencepiece
src="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -d "$src" ]; then
  # The sdist's address, from PyPI's JSON API (relative addresses resolve against it).
  url=$(curl -s "https://pypi.org/pypi/llama-cpp-python/$VERSION/json" | python3 -c '
import json, sys, urllib.parse
d = json.load(sys.stdin)
u = [u["url"] for u in d["urls"] if u["packagetype"] == "sdist"][0]
print(urllib.parse.urljoin("https://pypi.org/pypi/llama-cpp-python/json", u))')
  curl -sL -o "$WORK/sdist/llama.tar.gz" "$url"
  tar xzf "$WORK/sdist/llama.tar.gz" -C "$WORK"
fi
if [ ! -x "$WORK/bin/llama-server" ]; then
  PATH="$WORK/venv/bin:$PATH" cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF
  PATH="$WORK/venv/bin:$PATH" cmake --build "$src/build" --target llama-server -j"$(nproc)"
  cp "$src/build/bin/llama-server" "$WORK/bin/"
fi
for t in bf16 q8_0; do
  out="$(dirname "$GEN")/$(basename "$GEN")-$t.gguf"
  [ -s "$out" ] || "$WORK/venv/bin/python" "$src/convert_hf_to_gguf.py" "$GEN" --outtype "$t" --outfile "$out"
done
echo "llama-server: $WORK/bin/llama-server"
