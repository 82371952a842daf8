#!/bin/bash
# Interleaved rounds on the bf16 single-token figure: ours (stream_timing, 12 appended
# tokens after LEN) then llama-bench (-n 8 after a depth of LEN, 3 repetitions), three
# rounds per length, so that a change in the machine's speed during the run shows in both.
# LENS, ROUNDS and REPS (llama-bench's repetitions) override: the 2,048 rounds were run as
# `LENS=2048 ROUNDS="1 2" REPS=2 run.sh > log-2048.txt`.
set -e
R=$(dirname "$0")
B=/work/llbuild/build/bin/llama-bench
for round in ${ROUNDS:-1 2 3}; do
  for len in ${LENS:-128 512}; do
    echo "round $round len $len ours $(date -u +%T)"
    RAYON_NUM_THREADS=2 /work/main/target/release/examples/stream_timing /work/models/stream-8B bf16 $len 12 decode 2>&1 | tail -2
    echo "round $round len $len llama $(date -u +%T)"
    $B -m /work/models/gen-8B-bf16.gguf -t 2 -r ${REPS:-3} -o json -p 0 -n 8 -d $len > $R/llama-r$round-$len.json
    python3 -c "import json,sys; d=json.load(open(sys.argv[1]))[0]; print('llama', [round(1000/t) for t in d['samples_ts']])" $R/llama-r$round-$len.json
  done
done
