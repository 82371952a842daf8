#!/usr/bin/env python3
"""Rewards per second of `qwen3guard serve`'s /v1/reward: one batch of N rollouts against
the same rollouts sent one request at a time (docs/REWARD.md).

  reward_bench.py [--bin target/release/qwen3guard] --model DIR [--dtypes bf16,q8]
                  [--samples 256] [--single N] [--max-batch 32] [--verdict-only-too] [--out DIR]

Each rollout is a prompt of about 50 tokens and an answer of about 200 (ordinary English,
distinct per rollout); the guard's template adds its own ~390 tokens around them. Use a
checkpoint from `qwen3guard make-random --variant gen --verdict --verdict-text ...`, so that
every verdict is well formed and decoding stops where a real one does. `--single` times
only the first N rollouts one by one (default: all). Standard library only; prints one JSON
object per measurement and writes them under --out with the machine's description.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_load import Client  # noqa: E402

TOPICS = ["bake sourdough bread", "repair a bicycle chain", "plan a week of meals",
          "learn to play the guitar", "grow tomatoes on a balcony", "write a cover letter",
          "train for a first marathon", "set up a home network"]
WORDS = ("the first step is to gather what you need and to read the instructions once before "
         "you begin so that nothing surprises you later and every part of the work has its "
         "place then take your time with each stage check the result against what you "
         "expected and adjust as you go because small corrections early save a great deal "
         "of effort at the end").split()


def words(start, count):
    return " ".join(WORDS[(start + k) % len(WORDS)] for k in range(count))


def rollouts(count):
    """Prompts of ~50 tokens, answers of ~200 tokens, all distinct."""
    out = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        prompt = (f"Request {i}: I would like to {topic}. I have never done it before and I have "
                  f"about two hours this weekend. {words(i, 18).capitalize()}. What should I do first?")
        answer = " ".join(f"{words(i * 7 + s * 13, 29).capitalize()}." for s in range(6))
        out.append({"messages": [{"role": "user", "content": prompt}],
                    "response": f"Here is how to {topic}. {answer}"})
    return out


def wait_ready(url, timeout=600):
    client = Client(url)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            client.conn = None
            client.conn = __import__("http.client").client.HTTPConnection(client.host, client.port, timeout=5)
            client.conn.request("GET", "/health")
            if client.conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"not ready: {url}")


def post(client, body):
    status, payload = client.post("/v1/reward", body)
    if status != 200:
        raise SystemExit(f"/v1/reward answered {status}: {payload[:300]!r}")
    return json.loads(payload)


def measure(args, dtype, samples):
    port = args.port
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    log = open(os.path.join(args.out, f"serve-{dtype}.log"), "w")
    server = subprocess.Popen([args.bin, "serve", "--gen-model", args.model, "--dtype", dtype,
                               "--host", "127.0.0.1", "--port", str(port),
                               "--max-batch", str(args.max_batch),
                               "--max-reward-samples", str(len(samples))],
                              stderr=log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        # A batch of long rollouts takes many minutes on a small machine.
        client = Client(url, timeout=7200)
        status, payload = client.post("/v1/guard", {"messages": samples[0]["messages"] + [
            {"role": "assistant", "content": samples[0]["response"]}]})
        prompt_tokens = json.loads(payload)["prompt_tokens"] if status == 200 else None
        post(client, {"samples": samples[:2], "reward": "guard_only"})  # warm-up
        results = []
        passes = [("batch", {})]
        if args.verdict_only_too:
            passes.append(("batch, verdict_only", {"verdict_only": True}))
        for label, extra in passes:
            started = time.perf_counter()
            batch = post(client, {"samples": samples, "reward": "guard_only", **extra})
            wall = time.perf_counter() - started
            results.append({"dtype": dtype, "how": label, "rollouts": len(samples),
                            "wall_s": round(wall, 2), "rewards_per_s": round(len(samples) / wall, 3),
                            "mean_reward": sum(batch["rewards"]) / len(samples)})
            print(json.dumps(results[-1]), flush=True)
            if label == "batch":
                batched = batch
        single = samples[:args.single or len(samples)]
        started = time.perf_counter()
        same = 0
        for i, sample in enumerate(single):
            one = post(client, {"samples": [sample], "reward": "guard_only"})
            same += one["rewards"][0] == batched["rewards"][i] and one["details"][0] == batched["details"][i]
        wall = time.perf_counter() - started
        results.append({"dtype": dtype, "how": "one request at a time", "rollouts": len(single),
                        "wall_s": round(wall, 2), "rewards_per_s": round(len(single) / wall, 3),
                        "equal_to_batch": f"{same}/{len(single)}"})
        print(json.dumps(results[-1]), flush=True)
        speedup = results[0]["rewards_per_s"] / results[-1]["rewards_per_s"]
        summary = {"dtype": dtype, "prompt_tokens_per_rollout": prompt_tokens,
                   "batch_speedup": round(speedup, 2), "max_batch": args.max_batch,
                   "threads": args.threads}
        print(json.dumps(summary), flush=True)
        return results + [summary]
    finally:
        server.terminate()
        server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/release/qwen3guard")
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtypes", default="bf16,q8")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--single", type=int, default=0)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--verdict-only-too", action="store_true",
                        help="also time the batch with verdict_only (label-only answers)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--port", type=int, default=18400)
    parser.add_argument("--out", default=f"bench/results/{time.strftime('%Y-%m-%d')}-reward")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    machine = subprocess.run("lscpu | grep -E '^(Model name|CPU\\(s\\)|Hypervisor vendor)'; "
                             "echo simd: $(grep -o 'avx[^ ]*\\|fma' /proc/cpuinfo | sort -u | tr '\\n' ' ')",
                             shell=True, capture_output=True, text=True).stdout
    version = subprocess.run([args.bin, "--version"], capture_output=True, text=True).stdout
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    with open(os.path.join(args.out, "machine.txt"), "w") as fh:
        fh.write(f"date: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\ncommit: {commit}"
                 f"{machine}kernels: {version}threads: {args.threads}\nmodel: {args.model}\n"
                 f"command: {' '.join(sys.argv)}\n")
    samples = rollouts(args.samples)
    for dtype in args.dtypes.split(","):
        with open(os.path.join(args.out, f"reward-{dtype}.json"), "w") as fh:
            for record in measure(args, dtype, samples):
                fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    sys.exit(main())
