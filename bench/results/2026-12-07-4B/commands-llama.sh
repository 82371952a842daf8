#!/bin/bash
# llama.cpp side of the 4B figures: native llama-bench, GGUFs from to_gguf.py.
set -e
C=~/.cache/qwen3guard/llama-0.3.36; src=$C/llama_cpp_python-0.3.36/vendor/llama.cpp
R=/work/main/bench/results/2026-12-07-4B
PATH="$C/venv/bin:$PATH" cmake -S "$src" -B "$C/build" -DGGML_NATIVE=ON -DLLAMA_BUILD_TOOLS=ON > /tmp/llb.log 2>&1
PATH="$C/venv/bin:$PATH" cmake --build "$C/build" --target llama-bench -j2 >> /tmp/llb.log 2>&1
for t in bf16 q8_0; do
  f=/work/models/gen-4B-$t.gguf
  [ -s $f ] || PYTHONPATH=$src/gguf-py $C/venv/bin/python /work/shared/tools/to_gguf.py /work/models/gen-4B $f $t
done
B=$C/build/bin/llama-bench
$B --help 2>&1 | grep -E '^\s+-d|depth' | head -2
for t in bf16 q8_0; do
  f=/work/models/gen-4B-$t.gguf
  /usr/bin/time -v $B -m $f -t 2 -r 2 -o json -p 512 -n 0 > $R/llama-$t-prefill.json 2> $R/llama-$t-prefill.time
  $B -m $f -t 2 -r 2 -o json -p 115 -n 0 -d 201 > $R/llama-$t-verdict.json 2>> $R/llama-$t-prefill.time
  /usr/bin/time -v $B -m $f -t 2 -r 2 -o json -p 0 -n 8 -d 128,512,2048 > $R/llama-$t-decode.json 2> $R/llama-$t-decode.time
done
PATH="$C/venv/bin:$PATH" cmake -S "$src" -B "$C/build" -DGGML_NATIVE=OFF >> /tmp/llb.log 2>&1
PATH="$C/venv/bin:$PATH" cmake --build "$C/build" --target llama-server -j2 >> /tmp/llb.log 2>&1
echo llama-done
