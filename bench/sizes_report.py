#!/usr/bin/env python3
"""Turns a `bench/sizes_bench.sh` run (bench/results/<name>-<SIZE>/) into its page,
docs/benchmarks/<name>-<SIZE>.md: the figures side by side with llama.cpp's, the kernels
issue's targets for that size with their limits, and the run's own notes (notes.md in the
results folder, written by hand: what the figures mean, what was not measured). Then it
rewrites the lists at the end of docs/BENCHMARKS.md (larger sizes; runs with the
instruction sets capped), whose lines are the pages' titles and `Targets:` lines.

    python3 bench/sizes_report.py bench/results/2026-12-07-4B [--docs docs]

Inputs, all in the results folder: qwen3guard-{gen,stream}-<dtype>.json (`bench --json`;
the precisions measured are the ones present, of f32, bf16 and q8),
llama-<type>-{prefill,verdict,decode}.json (llama-bench `-o json`), the `/usr/bin/time -v`
reports beside them (peak resident memory), machine.txt, and blas.json where the run timed
OpenBLAS (the f32 prefill anchor). The shape
(layers, key/value heads) comes from ../shared/reference/model-shapes.json, the parameter
count from llama-bench's report of the same Gen weights. Standard library only.
"""
import argparse
import json
import re
from pathlib import Path

import report

# The precisions a run may hold, in the order of the columns (llama.cpp's counterpart:
# report.LC_OF).
DTYPES = ("f32", "bf16", "q8")
LC_OF = report.LC_OF
CONTEXTS = ("128", "512", "2048")
# The verdict forward that llama-bench runs: the 113 request-dependent tokens of the `bench`
# prompt plus `Safety:`, on top of its 201-token preamble (`-p 115 -d 201`).
VERDICT_TOKENS = 115
# The 0.6B shape's depth: its memory target is 1.3x the weights (bench/report.py's), not the
# larger sizes' 1.15x the weights plus the cache.
SMALL_LAYERS = 28
# The largest key/value cache the Gen figures hold: the prefill figure's 512 positions.
CACHE_POSITIONS = 512
# Bytes per weight (report.BYTES), which is also what a cached key/value element takes in
# that precision (q8: int8, its scales not counted, which makes the memory limit stricter).
BYTES = report.BYTES
MIB = 1 << 20
# The instruction-set extensions the kernels choose between (machine.txt lists every one).
KERNEL_FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16")


def llama(run, dtype, figure):
    """llama-bench's entries for one figure, keyed by context depth."""
    rows = report.load(run / f"llama-{LC_OF[dtype]}-{figure}.json") or []
    return {str(r["n_depth"]): r for r in rows}


def peak_rss_mib(time_report):
    try:
        text = time_report.read_text()
    except OSError:
        return None
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return int(m.group(1)) / 1024 if m else None


def measured(run):
    """The precisions this run measured ours in."""
    return [dt for dt in DTYPES if (run / f"qwen3guard-gen-{dt}.json").exists()]


def figures(run):
    """Every figure of the page, per tool and precision; None where a part is missing."""
    f = {}
    for dt in measured(run):
        gen = report.load(run / f"qwen3guard-gen-{dt}.json")
        stream = report.load(run / f"qwen3guard-stream-{dt}.json")
        prefill = llama(run, dt, "prefill").get("0")
        verdict = llama(run, dt, "verdict").get("201")
        decode = llama(run, dt, "decode")
        f[dt] = {
            "prefill": gen.get("prefill_tokens_per_s"),
            "stream_prefill": stream.get("prefill_tokens_per_s"),
            "token": {c: report.get(stream, "stream", "token_ms", c) for c in CONTEXTS},
            "verdict": report.get(gen, "gen", "verdict_only_ms"),
            "moderation": report.get(gen, "gen", "prompt_warm_ms"),
            "rss": gen.get("peak_rss_mb"),
            "lc_prefill": prefill and prefill["avg_ts"],
            "lc_token": {c: decode[c] and 1000 / decode[c]["avg_ts"] if c in decode else None
                         for c in CONTEXTS},
            "lc_verdict": verdict and 1000 * VERDICT_TOKENS / verdict["avg_ts"],
            "lc_rss": peak_rss_mib(run / f"llama-{LC_OF[dt]}-decode.time"),
            "params": prefill and prefill["model_n_params"],
        }
    return f


def cache_mib(shape, dtype):
    layers = shape["num_hidden_layers"]
    kv_heads, head_dim = 8, 128  # common to every published size (model-shapes.json's note)
    return layers * kv_heads * head_dim * 2 * BYTES[dtype] * CACHE_POSITIONS / MIB


def targets(f, shape, blas):
    """(name, short name, dtype, measured, limit, higher_is_better) for each target."""
    out = []
    for dt in f:
        d = f[dt]
        for c in CONTEXTS:
            out.append((f"Stream token after {c} no slower than llama.cpp's decode step (ms)",
                        f"Stream token after {c}", dt, d["token"][c], d["lc_token"][c], False))
    for dt in f:
        d = f[dt]
        out.append(("Verdict only at most 0.6x llama.cpp's verdict forward (ms)", "verdict only", dt,
                    d["verdict"], d["lc_verdict"] and 0.6 * d["lc_verdict"], False))
    for dt in f:
        d = f[dt]
        out.append(("Gen prefill at least 1.2x llama.cpp's (tokens/s)", "Gen prefill", dt,
                    d["prefill"], d["lc_prefill"] and 1.2 * d["lc_prefill"], True))
    if "f32" in f and blas:
        for key, model in (("prefill", "Gen"), ("stream_prefill", "Stream")):
            out.append((f"{model} f32 prefill at least 0.75x OpenBLAS on the backbone's products "
                        "(tokens/s)", f"{model} prefill vs OpenBLAS", "f32", f["f32"][key],
                        0.75 * blas, True))
    for dt in f:
        d = f[dt]
        params = d["params"]
        if shape["num_hidden_layers"] == SMALL_LAYERS:
            # 0.6B keeps the earlier performance issue's limit, as its main table does.
            name, limit = ("Peak RSS at most 1.3x the weights (MiB)",
                           params and 1.3 * params * BYTES[dt] / MIB)
        else:
            name, limit = ("Peak RSS at most 1.15x the weights plus the cache (MiB)",
                           params and 1.15 * (params * BYTES[dt] / MIB + cache_mib(shape, dt)))
        out.append((name, "peak RSS", dt, d["rss"], limit, False))
    return out


def met(measured, limit, higher):
    if measured is None or limit is None:
        return None
    return measured >= limit if higher else measured <= limit


def page(run, docs):
    date, size = run.name.rsplit("-", 1)
    shape = json.loads((Path(__file__).resolve().parents[2] / "shared/reference/model-shapes.json")
                       .read_text())[size]
    f = figures(run)
    params = next((d["params"] for d in f.values() if d["params"]), None)
    machine = (run / "machine.txt").read_text() if (run / "machine.txt").exists() else ""
    field = lambda name, default: next((l.split(":", 1)[1].strip() for l in machine.splitlines()
                                        if l.startswith(name + ":")), default)
    cap = field("isa cap", "none")
    llama_flags = field("llama.cpp flags", "-DGGML_NATIVE=ON")
    blas_run = report.load(run / "blas.json")
    blas = blas_run and blas_run["tokens"]["512"]["tokens_per_s"]
    simd = " ".join(f for f in field("simd", "").split() if f in KERNEL_FLAGS) or "n/a"
    kernels = re.search(r"kernels: ([\w-]+)\)", machine)
    commit = (field("commit", "n/a").split() or ["n/a"])[0][:7]
    fm = report.fmt

    def line(name, key, sub=None, peer=True):
        pick = (lambda d, k: d[k][sub]) if sub else (lambda d, k: d[k])
        cols = [fm(pick(f[dt], key)) for dt in f]
        cols += [fm(pick(f[dt], "lc_" + key)) if peer else "" for dt in f]
        return f"| {name} | " + " | ".join(cols) + " |"

    heads = [f"qwen3guard {dt}" for dt in f] + [f"llama.cpp {LC_OF[dt]}" for dt in f]
    table = [f"| figure ({size}) | " + " | ".join(heads) + " |",
             "|---|" + "---:|" * len(heads),
             line("Gen prefill, 512 tokens (tokens/s)", "prefill"),
             line("Stream prefill, 512 tokens (tokens/s)", "stream_prefill", peer=False),
             *[line(f"Stream: one appended token after {c} (ms; llama.cpp: Gen decode step)",
                    "token", c) for c in CONTEXTS],
             line(f"Gen verdict only (ms; llama.cpp: {VERDICT_TOKENS} tokens after a 201-token "
                  "context)", "verdict"),
             line("Gen full prompt moderation, preamble cached, 8 tokens (ms)", "moderation",
                  peer=False),
             line("Gen peak RSS (MiB; llama.cpp: its decoding run, 2,048 tokens of context)", "rss")]

    rows, missed = [], []
    for name, short, dt, value, limit, higher in targets(f, shape, blas):
        ok = met(value, limit, higher)
        mark = "n/a" if ok is None else "met" if ok else "**missed**"
        rows.append(f"| {name} | {dt} | {fm(value)} | {'>=' if higher else '<='} {fm(limit)} | {mark} |")
        if ok is False:
            unit = name.rsplit("(", 1)[1].rstrip(")")
            missed.append(f"{short} in {dt} ({fm(value)} {unit} against a limit of {fm(limit)})")
    judged = [r for r in rows if not r.endswith("n/a |")]
    n_met = sum(r.endswith("met |") for r in judged)
    summary = f"Targets: {n_met} of {len(judged)} met" + (
        f"; missed: {'; '.join(missed)}." if missed else ".")

    notes = (run / "notes.md").read_text() if (run / "notes.md").exists() else ""
    weight_bytes = ", ".join(f"{BYTES[dt]} byte{'s' if BYTES[dt] > 1 else ''} a parameter in {dt} "
                             f"({fm(params and params * BYTES[dt] / MIB)} MiB)" for dt in f)
    caches = ", ".join(f"{fm(cache_mib(shape, dt), 0)} MiB in {dt}" for dt in f)
    memory_rule = (", without the cache: the 0.6B limit of the earlier performance issue, as in "
                   "the main 0.6B tables" if shape["num_hidden_layers"] == SMALL_LAYERS else
                   f", plus the largest key/value cache the Gen figures hold ({CACHE_POSITIONS} "
                   f"positions, the prefill figure: {shape['num_hidden_layers']} layers x 8 heads x "
                   f"128 x 2 vectors; {caches})")
    capped = "" if cap == "none" else f", instruction sets capped at {cap}"
    capped_by = "" if cap == "none" else f" (capped by `QWEN3GUARD_ISA={cap}`)"
    with_cap = "" if cap == "none" else ", with the capping variables its header shows"
    l2 = field("openblas l2 size", "detected")
    l2 = "" if l2 == "detected" else f", L2 taken as {l2} KiB by `OPENBLAS_L2_SIZE`"
    anchor = "" if not blas else (
        f" numpy {blas_run['numpy']}'s OpenBLAS ({blas_run['blas']}, core type "
        f"{field('openblas coretype', 'detected')}{l2}) runs the backbone's f32 products of a 512-token "
        f"prefill at {fm(blas)} tokens/s, as if nothing else cost anything "
        "(`bench/blas_anchor.py`).")
    md = f"""# {size}: qwen3guard vs llama.cpp (run of {date}{capped})

Machine: {machine_line(machine)}; SIMD {simd}. qwen3guard's kernels:
{kernels.group(1) if kernels else 'n/a'}{capped_by}. llama.cpp built from the
source vendored in llama-cpp-python with `{llama_flags}`.{anchor} 2 threads each, one tool at a
time, nothing else running. Engine of commit `{commit}`. Raw results, `/usr/bin/time` reports and the machine:
`bench/results/{run.name}/`; the commands: `bench/sizes_bench.sh` (`SIZE={size}`{with_cap}). This page
is written by `bench/sizes_report.py` from those results.

Checkpoints: `qwen3guard make-random --variant gen|stream --size {size}`, the published
{size} shape ({shape['num_hidden_layers']} layers, width {shape['hidden_size']:,}, MLP \
{shape['intermediate_size']:,}, {'tied' if shape['tie_word_embeddings'] else 'untied'} \
embeddings; {fm(params and params / 1e9, 2)} G parameters) with random weights; GGUF files
of the Gen checkpoint by `../shared/tools/to_gguf.py` ({', '.join(LC_OF[dt] for dt in f)}). `qwen3guard bench
--runs 2` gives the slower of two timed runs after a warm-up (its median of an even count is
the upper middle one); `llama-bench -r 2` gives the mean of two.

{chr(10).join(table)}

llama.cpp's figures are llama-bench's: prefill `-p 512 -n 0`; the decoding step
`-p 0 -n 8 -d 128,512,2048` (1000 / its tokens per second); the verdict forward
`-p {VERDICT_TOKENS} -n 0 -d 201`: the 113 tokens of the `bench` prompt that follow its \
201-token preamble, plus `Safety:`, evaluated on top of the 201 cached tokens (the work of
our verdict figure without its tokenization and logits reading, which favours llama.cpp
slightly).

## Targets of the kernels issue for {size}

{summary}

| target | dtype | measured | limit | |
|---|---|---:|---:|---|
{chr(10).join(rows)}

The limits for memory take the weights at {weight_bytes} (the q8 scales not counted, which \
makes the limit stricter){memory_rule}.
{chr(10) + notes if notes else ''}"""
    out = docs / "benchmarks" / f"{run.name}.md"
    out.write_text(md)
    print(f"wrote {out}: {summary}")


def machine_line(machine):
    fields = dict(l.split(":", 1) for l in machine.splitlines() if ":" in l)
    cpu = report.cpu_name({key: fields[name].strip() for key, name in
                           (("cpu", "Model name"), ("cpu_family", "CPU family"),
                            ("cpu_model", "Model")) if name in fields})
    cores = fields.get("CPU(s)", "?").strip()
    hyper = fields.get("Hypervisor vendor", "").strip()
    return f"{cores}-core {cpu}{' ' + hyper + ' guest' if hyper else ''}"


def relist(docs):
    """Rewrites the "Larger sizes" section at the end of docs/BENCHMARKS.md."""
    index = docs / "BENCHMARKS.md"
    text = index.read_text()
    head = text.split("\n## Larger sizes\n", 1)[0]
    index.write_text(head + report.larger_sizes(docs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--docs", default="docs")
    args = ap.parse_args()
    docs = Path(args.docs)
    for r in args.runs:
        page(Path(r.rstrip("/")), docs)
    relist(docs)


if __name__ == "__main__":
    main()
