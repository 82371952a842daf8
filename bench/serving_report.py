#!/usr/bin/env python3
"""Markdown tables of a bench/serve_bench.sh results folder (for docs/SERVING.md).

  bench/serving_report.py bench/results/2026-12-02-serving
"""
import json
import pathlib
import sys


def lines(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def main():
    out = pathlib.Path(sys.argv[1])
    print("```")
    print((out / "machine.txt").read_text().strip())
    print("```\n")
    for dtype in ["bf16", "q8"]:
        library = out / f"library-{dtype}.json"
        gen, llama = lines(out / f"gen-{dtype}.jsonl"), lines(out / f"llama-{dtype}.jsonl")
        if not (gen or llama or library.exists()):
            continue
        print(f"### {dtype}\n")
        overhead = {o["figure"]: o for o in lines(out / f"overhead-{dtype}.jsonl")}
        if library.exists() and overhead:
            lib = json.loads(library.read_text())["gen"]
            print("| the `bench` prompt at concurrency 1 | library (`bench`, median) | server (`/v1/guard`, median) | overhead |")
            print("| --- | ---: | ---: | ---: |")
            for key, name in [("prompt_warm_ms", "moderation, 8 tokens decoded"),
                              ("verdict_only_ms", "verdict only (label and scores)")]:
                if key in lib and key in overhead:
                    a, b = lib[key], overhead[key]["p50_ms"]
                    print(f"| {name} | {a:.0f} ms | {b:.0f} ms | {100 * (b - a) / a:+.1f} % |")
            print()
        inprocess = lines(out / f"inprocess-{dtype}.jsonl")
        if inprocess:
            print("| the `bench` prompt at concurrency 1, in one process, alternating | library (median) | server (`/v1/guard`, median) | overhead |")
            print("| --- | ---: | ---: | ---: |")
            names = {"prompt_warm_ms": "moderation, 8 tokens decoded",
                     "verdict_only_ms": "verdict only (label and scores)"}
            for o in inprocess:
                print(f"| {names[o['figure']]} | {o['library_ms']:.0f} ms | {o['server_ms']:.0f} ms | "
                      f"{o['overhead_pct']:+.1f} % |")
            print()
        if gen or llama:
            print("| work | concurrency | qwen3guard req/s (p50 / p99 ms) | llama-server req/s (p50 / p99 ms) | ratio |")
            print("| --- | ---: | ---: | ---: | ---: |")
            for verdict_only, n_predict, name in [(False, 8, "8 tokens decoded"),
                                                  (True, 1, "label only / 1 token")]:
                for c in [1, 8, 32]:
                    # The last run of a kind counts (a rerun appends to the file).
                    ours = next((g for g in reversed(gen) if g["verdict_only"] == verdict_only
                                 and g["concurrency"] == c
                                 and g["max_new_tokens"] == (0 if verdict_only else 8)), None)
                    theirs = next((l for l in reversed(llama) if l["n_predict"] == n_predict and l["concurrency"] == c), None)
                    fmt = lambda r: f"{r['requests_per_s']:.2f} ({r['p50_ms']:.0f} / {r['p99_ms']:.0f})" + (
                        f", {r['errors']} errors" if r["errors"] else "") if r else "-"
                    ratio = (f"{ours['requests_per_s'] / theirs['requests_per_s']:.2f}x"
                             if ours and theirs and theirs["requests_per_s"] else "-")
                    print(f"| {name} | {c} | {fmt(ours)} | {fmt(theirs)} | {ratio} |")
            print()
        stream = lines(out / f"stream-{dtype}.jsonl")
        if stream:
            print("| stream sessions appending one token at a time | aggregate tokens/s | per-token p50 / p99 ms | errors |")
            print("| ---: | ---: | ---: | ---: |")
            for s in stream:
                print(f"| {s['sessions']} | {s['tokens_per_s']:.1f} | {s['p50_ms']:.0f} / {s['p99_ms']:.0f} | {s['errors']} |")
            if len(stream) >= 2 and stream[0]["tokens_per_s"]:
                print(f"\n{stream[-1]['sessions']} sessions: {stream[-1]['tokens_per_s'] / stream[0]['tokens_per_s']:.1f}x "
                      f"the tokens/s of one session alone.")
            print()
        churn = out / f"churn-{dtype}.json"
        if churn.exists() and churn.stat().st_size:
            c = json.loads(churn.read_text())
            print("| resident memory | MiB |")
            print("| --- | ---: |")
            print(f"| settled after warm-up (200 requests) | {c['rss_settled_mib']} |")
            print(f"| after {c['requests']} more `/v1/guard` requests (concurrency 32; {c['request_errors']} errors) | "
                  f"{c['rss_after_requests_mib']} ({100 * (c['rss_after_requests_mib'] / c['rss_settled_mib'] - 1):+.1f} %) |")
            print(f"| after {c['sessions']} sessions opened, appended 16 tokens and closed ({c['session_errors']} errors) | "
                  f"{c['rss_after_sessions_mib']} ({100 * (c['rss_after_sessions_mib'] / c['rss_settled_mib'] - 1):+.1f} %) |")
            print()


if __name__ == "__main__":
    main()
