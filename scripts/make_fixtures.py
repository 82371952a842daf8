#!/usr/bin/env python3
"""Generate the small Qwen3Guard test checkpoints and their reference outputs.

Purpose
    The Rust crate is tested against tiny random-weight checkpoints laid out exactly like
    the published Hugging Face ones (config.json, bf16 safetensors, tokenizer files), plus
    reference outputs computed here with Hugging Face transformers (Gen) and a small
    Python implementation of the Stream heads on top of transformers' Qwen3Model.

How to run (from the repository root; needs torch, transformers >= 5, safetensors, numpy)
    /path/to/venv/bin/python scripts/make_fixtures.py
The stock tokenizer and the Gen chat template are read from $QWEN3GUARD_REFERENCE
(default ../shared/reference beside the repository: qwen3-tokenizer/,
qwen3guard-gen.chat_template.jinja).
It takes ~20 s on a CPU and fails loudly if any sanity check does not hold.

What it writes, under crates/qwen3guard/tests/fixtures/
    gen-tied/            Qwen3ForCausalLM, tied lm_head, one model.safetensors,
                         config.json in the transformers 4.5x form (top-level rope_theta).
    gen-sharded/         Qwen3ForCausalLM with its own lm_head.weight, two shards + index,
                         config.json in the new form (rope_parameters).
    stream/              Qwen3ForGuardModel: Qwen3 backbone + response/query heads.
    stream-constructed/  Stream checkpoint whose verdicts are known by construction
                         (see construction.json and build_constructed()).
    reference/           render.json, gen-tied.json, gen-sharded.json, stream.json,
                         stream-constructed.json: one JSON object per case, one per line.
Every run is deterministic (fixed seeds, single-threaded CPU f32); reruns give byte-identical
files. Weights take few distinct values (small integers times a power of two) so that git
compresses them well although the vocabulary is the real 151,936 tokens.
"""
import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM, Qwen3Model

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "crates/qwen3guard/tests/fixtures"
# The project's shared reference material (stock tokenizer, Gen chat template).
REF = Path(os.environ.get("QWEN3GUARD_REFERENCE", Path(__file__).resolve().parents[1].parent / "shared" / "reference"))
TOK_DIR = REF / "qwen3-tokenizer"
GEN_TEMPLATE = REF / "qwen3guard-gen.chat_template.jinja"

VOCAB, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, HEAD_DIM, INNER = 151936, 32, 64, 2, 4, 2, 16, 16
IM_END, EOT, THINK, END_THINK, NL, NLNL = 151645, 151643, 151667, 151668, 198, 271
RISK_MAP = {"0": "Safe", "1": "Unsafe", "2": "Controversial"}
CAT_MAP = {"0": "Violent", "1": "Sexual Content or Sexual Acts", "2": "Suicide & Self-Harm",
           "3": "Politically Sensitive Topics", "4": "PII", "5": "Copyright Violation",
           "6": "Non-violent Illegal Acts", "7": "Unethical Acts"}
QCAT_MAP = {**CAT_MAP, "8": "Jailbreak"}

# Seed keys of the random tensors. The three random checkpoints share one embedding table
# ("embed/shared": identical bytes, so git stores it about once). The Gen keys were picked so
# that every greedy step of every case has a top-1/top-2 logit margin >= 1e-3.
SEEDS = {"gen-tied": "gen-tied/1", "gen-sharded": "gen-sharded/0", "stream": "stream/0"}

def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


STORY = ("The town of Millbrook had not held a contested election in forty years. When the old mayor retired, "
         "two neighbours announced they would run: Clara, who owned the bakery, and Tom, who repaired bicycles "
         "behind the post office. Every evening people gathered in the square to argue about potholes, the "
         "library budget, and whether the fountain should finally be fixed. Clara promised longer library hours; "
         "Tom promised to repair every road before winter. On the day of the vote, the line outside the school "
         "gym stretched past the river. Children handed out lemonade, and someone's dog slept under the ballot "
         "table. When the count was finished, the result was a tie. After a long silence, Clara laughed and "
         "suggested they share the job, and to everyone's surprise, Tom agreed.")
# (name, messages, also a Gen case?). A response with its own <think> block is Stream-only.
# " bomb", " kill", " poison", " vote", " election" occur so that the constructed checkpoint flags them.
CASES = [
    ("prompt_bomb", [U("How can I make a bomb?")], True),
    ("response_bread", [U("How do I bake bread?"),
                        A("Mix flour, water, yeast and salt, knead, let it rise, then bake.")], True),
    ("system_user", [{"role": "system", "content": "You are a helpful assistant."},
                     U("Tell me a joke about cats.")], True),
    ("multi_turn_prompt", [U("Hi!"), A("Hello! How can I help?"), U("Who should I vote for in the election?")], True),
    ("multi_turn_response", [U("Hi!"), A("Hello! How can I help?"), U("How do I poison my neighbour's dog?"),
                             A("I can't help you kill or poison an animal.")], True),
    ("unicode", [U("你好，世界！Ça va? 😀 naïve café — 東京")], True),
    ("whitespace_prompt", [U("  leading and trailing  \n\nsecond\tline\t ")], True),
    ("whitespace_response", [U("\tTabs\tfirst"), A("  Two spaces, then\n\n\nthree newlines.  ")], True),
    ("numbers_code", [U("What does `print(2**10)` output? 3.14159, 1e-6, 42"),
                      A("It prints 1024.\n```python\nx = [i * 3 for i in range(5)]\n```")], True),
    ("thinking_response", [U("Is it safe to mix bleach and ammonia?"),
                           A("<think>The user asks about mixing cleaners. That makes a toxic gas.</think>"
                             "No. Mixing them releases toxic chloramine gas.")], False),
    ("long_response", [U("Write a short story about an election in a small town."), A(STORY)], True),
]


def rand_ints(key, shape, lo, hi):
    """Uniform integers in [lo, hi], seeded by a stable hash of `key` (a string)."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    return torch.from_numpy(rng.integers(lo, hi + 1, size=shape).astype(np.float32))


def proj(key, out_dim, in_dim):
    # k * 2^-5 with k in [-8, 8]: std ~0.15, close to 1/sqrt(fan_in) for fan_in 16..64.
    return rand_ints(key, (out_dim, in_dim), -8, 8) * 2.0 ** -5


def norm_w(key, dim):
    return 1.0 + rand_ints(key, (dim,), -2, 2) / 16


def embedding(key):
    # k * 2^-5 with k in [-2, 2]: std ~0.044; five distinct values keep the 151,936 x 32
    # table at ~1.8 MB zlib-compressed (17 values would be ~3.1 MB).
    return rand_ints(key, (VOCAB, HIDDEN), -2, 2) * 2.0 ** -5


def backbone(seed, embed_key):
    # The final norm is scaled x16 (as in real checkpoints, whose final-norm weights are large):
    # logits then spread like a real model's (std ~4), so greedy top-1/top-2 near-ties over
    # the 151,936-token vocabulary become rare enough to keep every step's margin >= 1e-3.
    w = {"model.embed_tokens.weight": embedding(embed_key),
         "model.norm.weight": 16 * norm_w(f"{seed}/norm", HIDDEN)}
    for i in range(LAYERS):
        p, k = f"model.layers.{i}.", f"{seed}/{i}/"
        q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
        for name, o, n in [("self_attn.q_proj", q, HIDDEN), ("self_attn.k_proj", kv, HIDDEN),
                           ("self_attn.v_proj", kv, HIDDEN), ("self_attn.o_proj", HIDDEN, q),
                           ("mlp.gate_proj", INTER, HIDDEN), ("mlp.up_proj", INTER, HIDDEN),
                           ("mlp.down_proj", HIDDEN, INTER)]:
            w[p + name + ".weight"] = proj(k + name, o, n)
        for name, d in [("self_attn.q_norm", HEAD_DIM), ("self_attn.k_norm", HEAD_DIM),
                        ("input_layernorm", HIDDEN), ("post_attention_layernorm", HIDDEN)]:
            w[p + name + ".weight"] = norm_w(k + name, d)
    return w


def stream_heads(seed):
    w = {}
    for pre, ncat in [("", 8), ("query_", 9)]:
        w[pre + "risk_level_category_pre.weight"] = proj(f"{seed}/{pre}pre", INNER, HIDDEN)
        w[pre + "risk_level_category_layernorm.weight"] = norm_w(f"{seed}/{pre}ln", INNER)
        w[pre + "risk_level_head.weight"] = proj(f"{seed}/{pre}risk", 3, INNER)
        w[pre + "category_head.weight"] = proj(f"{seed}/{pre}cat", ncat, INNER)
    return w


def config(arch, tied, new_rope_form, stream=False):
    c = {"architectures": [arch], "attention_bias": False, "attention_dropout": 0.0,
         "bos_token_id": EOT, "eos_token_id": IM_END, "head_dim": HEAD_DIM, "hidden_act": "silu",
         "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": INTER,
         "max_position_embeddings": 1024, "max_window_layers": LAYERS, "model_type": "qwen3",
         "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "num_key_value_heads": KV_HEADS,
         "rms_norm_eps": 1e-06, "sliding_window": None, "tie_word_embeddings": tied,
         "use_cache": True, "use_sliding_window": False, "vocab_size": VOCAB}
    if new_rope_form:  # what transformers >= 5 writes
        c.update({"dtype": "bfloat16", "layer_types": ["full_attention"] * LAYERS,
                  "rope_parameters": {"rope_type": "default", "rope_theta": 1000000},
                  "transformers_version": "5.0.0"})
    else:  # what the published checkpoints (transformers 4.5x) carry
        c.update({"rope_scaling": None, "rope_theta": 1000000, "torch_dtype": "bfloat16",
                  "transformers_version": "4.51.0"})
    if stream:
        c.update({"guard_inner_size": INNER, "num_risk_level": 3, "num_category": 8,
                  "num_query_risk_level": 3, "num_query_category": 9,
                  "response_risk_level_map": RISK_MAP, "response_category_map": CAT_MAP,
                  "query_risk_level_map": RISK_MAP, "query_category_map": QCAT_MAP})
    return dict(sorted(c.items()))


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_cases(path, cases):
    # One case per line: valid JSON, readable diffs, full-precision floats (Python repr).
    path.write_text("[\n" + ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n]\n",
                    encoding="utf-8")


def write_checkpoint(d, cfg, weights, gen, shards=None):
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "config.json", cfg)
    bf = {k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()}
    for v in weights.values():  # every value must survive the bf16 cast exactly
        assert torch.equal(v.to(torch.bfloat16).float(), v)
    if shards is None:
        save_file(bf, d / "model.safetensors", metadata={"format": "pt"})
    else:
        wmap = {}
        for i, names in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file({k: bf[k] for k in names}, d / fname, metadata={"format": "pt"})
            wmap.update({k: fname for k in names})
        assert sorted(wmap) == sorted(bf)
        total = sum(t.numel() * t.element_size() for t in bf.values())
        write_json(d / "model.safetensors.index.json",
                   {"metadata": {"total_size": total}, "weight_map": dict(sorted(wmap.items()))})
    shutil.copyfile(TOK_DIR / "tokenizer.json", d / "tokenizer.json")
    if gen:
        tc = json.loads((TOK_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
        tc["chat_template"] = GEN_TEMPLATE.read_text(encoding="utf-8")
        write_json(d / "tokenizer_config.json", tc)
        write_json(d / "generation_config.json", {"do_sample": False, "eos_token_id": [IM_END, EOT]})
    else:
        shutil.copyfile(TOK_DIR / "tokenizer_config.json", d / "tokenizer_config.json")


def read_weights(d):
    w = {}
    for f in sorted(d.glob("*.safetensors")):
        w.update(load_file(f))
    return {k: v.float() for k, v in w.items()}


def render(tok, messages, gen):
    kw = {} if gen else {"enable_thinking": False}
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False, **kw)
    return text, tok(text, add_special_tokens=False).input_ids


def f32list(t):
    t = t.detach().float()
    assert torch.isfinite(t).all()
    return t.tolist()


# ----------------------------------------------------------------------------- Gen reference
def gen_reference(d, tok):
    model = Qwen3ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    cfg = json.loads((d / "config.json").read_text())
    assert model.config.rope_parameters["rope_theta"] == 1000000, model.config.rope_parameters
    # Every tensor must come from the files (nothing silently initialised), tying as configured.
    files, sd = read_weights(d), model.state_dict()
    assert set(sd) - set(files) == ({"lm_head.weight"} if cfg["tie_word_embeddings"] else set())
    assert all(torch.equal(sd[k], v) for k, v in files.items())
    assert torch.equal(model.lm_head.weight, files.get("lm_head.weight", files["model.embed_tokens.weight"]))

    prefix = tok("Safety:", add_special_tokens=False).input_ids
    labels, label_seqs = {}, {}
    for lab in ["Safe", "Unsafe", "Controversial"]:
        ids = tok(f"Safety: {lab}", add_special_tokens=False).input_ids
        assert ids[:len(prefix)] == prefix
        labels[lab], label_seqs[lab] = ids[len(prefix)], ids[len(prefix):]
        # The first label token must start the label word (" Controversial" is 3 tokens).
        assert f" {lab}".startswith(tok.decode([labels[lab]])) and tok.decode(label_seqs[lab]) == f" {lab}"
    assert len(set(labels.values())) == 3
    sample_ids = sorted({0, 1, 2, NL, NLNL, 151644, EOT, IM_END, THINK, END_THINK, 151669, 151935,
                         *prefix, *labels.values(), *(11 + 2357 * k for k in range(48))})

    out = []
    for name, messages, for_gen in CASES:
        if not for_gen:
            continue
        ids = render(tok, messages, gen=True)[1]
        x = torch.tensor([ids])
        g = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False,
                           eos_token_id=IM_END, pad_token_id=EOT, output_logits=True, return_dict_in_generate=True)
        new = g.sequences[0, len(ids):].tolist()
        margins = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in g.logits]
        assert EOT not in new  # so also stopping at 151643 (generation_config.json) changes nothing
        hidden = model.model(x).last_hidden_state[0, -1]
        logits = model(x).logits[0, -1]
        assert torch.allclose(model.lm_head(hidden), logits, atol=1e-5) and int(logits.argmax()) == new[0]
        # Teacher-forced "Safety:" then the three label tokens' full-vocabulary probabilities, renormalised.
        p = torch.softmax(model(torch.tensor([ids + prefix])).logits[0, -1], dim=-1)[list(labels.values())]
        p = p / p.sum()
        print(f"  {d.name:12s} {name:22s} prompt {len(ids):4d} tok, greedy {new}, min margin {min(margins):.4f}")
        assert min(margins) >= 1e-3, f"{d.name}/{name}: near-tie in greedy decoding; change the seed"
        out.append({"name": name, "messages": messages, "prompt_ids": ids, "greedy_ids": new,
                    "greedy_min_margin": min(margins), "last_hidden": f32list(hidden),
                    "logits_sample": {"ids": sample_ids, "values": f32list(logits[sample_ids])},
                    "safety_prefix_ids": prefix, "label_token_ids": labels,
                    "label_token_sequences": label_seqs,
                    "scores": dict(zip(labels, f32list(p)))})
    return out


# -------------------------------------------------------------------------- Stream reference
class StreamReference:
    """Qwen3Guard-Stream: transformers' Qwen3Model backbone + the paper's Eq. 3 heads, all f32."""

    def __init__(self, d):
        cfg = Qwen3Config.from_pretrained(d)
        assert cfg.rope_parameters["rope_theta"] == 1000000 and cfg.tie_word_embeddings
        cfg._attn_implementation = "eager"
        self.eps = cfg.rms_norm_eps
        w = read_weights(d)
        self.model = Qwen3Model(cfg).eval()
        self.model.load_state_dict({k[6:]: v for k, v in w.items() if k.startswith("model.")}, strict=True)
        self.heads = {k: v for k, v in w.items() if not k.startswith("model.")}
        assert len(self.heads) == 8

    def rmsnorm(self, x, weight):  # Qwen3RMSNorm semantics
        x = x.float()
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def head(self, h, role):
        pre = "query_" if role == "query" else ""
        x = self.rmsnorm(h @ self.heads[pre + "risk_level_category_pre.weight"].T,
                         self.heads[pre + "risk_level_category_layernorm.weight"])
        return (torch.softmax(x @ self.heads[pre + "risk_level_head.weight"].T, dim=-1),
                torch.softmax(x @ self.heads[pre + "category_head.weight"].T, dim=-1))

    def hidden(self, ids):
        return self.model(torch.tensor([ids])).last_hidden_state[0]


def top2_gap(case):
    """Smallest top-1/top-2 probability gap over every distribution of a Stream case."""
    q, r = case["query"], case["response"]
    rows = [q["risk_probs"], q["category_probs"], *r["risk_probs"], *r["category_probs"]]
    return min(sorted(p)[-1] - sorted(p)[-2] for p in rows)


def split_points(ids, messages):
    """user_end_index and response_start_index as evaluation.md defines them."""
    last_user = max(i for i in range(len(ids) - 1) if ids[i] == 151644 and ids[i + 1] == 872)  # <|im_start|>user
    user_end = ids.index(IM_END, last_user)
    if messages[-1]["role"] != "assistant":
        return user_end, None
    asst = ids.index(77091, user_end)  # "assistant"
    assert ids[asst - 1] == 151644 and ids[asst + 1] == NL and ids[asst + 2] == THINK
    if "</think>" in messages[-1]["content"]:  # response carries its own reasoning
        assert ids[asst + 3] == NL
        return user_end, asst + 4
    end_think = ids.index(END_THINK, asst)
    assert ids[end_think + 1] == NLNL
    return user_end, end_think + 2


def stream_reference(ref, tok):
    out = []
    for name, messages, _ in CASES:
        ids = render(tok, messages, gen=False)[1]
        user_end, start = split_points(ids, messages)
        h = ref.hidden(ids)
        q_risk, q_cat = ref.head(h[user_end], "query")
        r_risk, r_cat = ref.head(h[user_end + 1:], "response")
        out.append({"name": name, "messages": messages, "token_ids": ids, "user_end_index": user_end,
                    "response_start_index": start, "response_first_index": user_end + 1,
                    "query": {"risk_probs": f32list(q_risk), "category_probs": f32list(q_cat)},
                    "response": {"risk_probs": f32list(r_risk), "category_probs": f32list(r_cat)}})
    return out


# ----------------------------------------------------------------------- constructed Stream
def build_constructed(tok):
    """Zero o_proj/down_proj make every layer the identity on the residual stream, so the final
    hidden state at a position is norm(embedding of its token). Dim 2 is a constant 1.0 ("bias"),
    dim 0 = 8 marks Unsafe/Violent tokens, dim 1 = 8 marks Controversial/Politically Sensitive."""
    words = {}
    for w in [" bomb", " kill", " poison", " vote", " election"]:
        ids = tok(w, add_special_tokens=False).input_ids
        assert len(ids) == 1, (w, ids)
        words[w] = ids[0]
    unsafe, contro = [words[w] for w in [" bomb", " kill", " poison"]], [words[w] for w in [" vote", " election"]]
    w = backbone("constructed", "constructed/embed")
    e = w["model.embed_tokens.weight"]
    e[:, :3] = 0.0
    e[:, 2] = 1.0
    e[unsafe, 0] = 8.0
    e[contro, 1] = 8.0
    w["model.norm.weight"] = torch.ones(HIDDEN)
    for i in range(LAYERS):
        w[f"model.layers.{i}.self_attn.o_proj.weight"].zero_()
        w[f"model.layers.{i}.mlp.down_proj.weight"].zero_()
    for pre, ncat in [("", 8), ("query_", 9)]:
        # Inner dims 0..2 copy hidden dims 0..2; the rest are small random mixes of dims 3..31.
        p = rand_ints("constructed/pre", (INNER, HIDDEN), -2, 2) * 2.0 ** -6
        p[:, :3] = 0.0
        p[:3, :] = 0.0
        p[0, 0] = p[1, 1] = p[2, 2] = 1.0
        risk = torch.zeros(3, INNER)
        risk[0, 2], risk[1, 0], risk[2, 1] = 1.0, 2.0, 2.0  # Safe <- bias, Unsafe <- dim0, Contro <- dim1
        cat = torch.zeros(ncat, INNER)
        cat[0, 0], cat[3, 1] = 2.0, 2.0  # Violent <- dim0, Politically Sensitive Topics <- dim1
        cat[7, 2] = 0.25  # a weak Unethical Acts <- bias: Safe tokens' category argmax is not a tie
        w[pre + "risk_level_category_pre.weight"] = p
        w[pre + "risk_level_category_layernorm.weight"] = torch.ones(INNER)
        w[pre + "risk_level_head.weight"] = risk
        w[pre + "category_head.weight"] = cat
    return w, {"unsafe_token_ids": unsafe, "controversial_token_ids": contro, "words": words,
               "other_tokens": {"risk": "Safe", "category": "Unethical Acts (argmax, prob ~0.28)"}}


def expected(tid, cons):
    if tid in cons["unsafe_token_ids"]:
        return 1, 0  # Unsafe, Violent
    if tid in cons["controversial_token_ids"]:
        return 2, 3  # Controversial, Politically Sensitive Topics
    return 0, 7  # Safe; category argmax Unethical Acts, but weak (no 0.9 threshold)


def check_constructed(ref, cons, cases):
    # 1. Every vocabulary entry, through final norm + heads (the backbone is the identity here).
    h = ref.model.norm(ref.model.embed_tokens.weight)
    exp = [expected(t, cons) for t in range(VOCAB)]
    r_idx = torch.tensor([[r] for r, _ in exp])
    c_idx = torch.tensor([c for _, c in exp])
    flagged = [t for t, (r, _) in enumerate(exp) if r != 0]
    for role in ["response", "query"]:
        risk, cat = ref.head(h, role)
        win = risk.gather(1, r_idx)
        cat_win = cat[flagged, c_idx[flagged]]
        assert win.min() > 0.9 and cat_win.min() > 0.9 and torch.equal(cat.argmax(-1), c_idx), role
        print(f"  constructed {role}: min winning prob over the vocabulary: risk {float(win.min()):.4f}, "
              f"category of flagged tokens {float(cat_win.min()):.4f}")
    # 2. The real backbone forward on every case reproduces it position by position.
    hits = 0
    for case in cases:
        ids = case["token_ids"]
        assert torch.allclose(ref.hidden(ids), h[ids], atol=1e-5)
        u = case["user_end_index"]
        q = case["query"]
        for tid, rp, cp in [(ids[u], q["risk_probs"], q["category_probs"])] + list(
                zip(ids[u + 1:], case["response"]["risk_probs"], case["response"]["category_probs"])):
            r, c = expected(tid, cons)
            hits += r != 0
            assert rp[r] > 0.9 and cp.index(max(cp)) == c and (r == 0 or cp[c] > 0.9), (case["name"], tid, rp, cp)
    assert hits >= 3, "the cases should exercise the flagged tokens inside responses"


def main():
    torch.set_num_threads(1)  # fixed reduction order: reruns are byte-identical
    torch.use_deterministic_algorithms(True)
    torch.set_grad_enabled(False)  # inference only
    ref_dir = OUT / "reference"
    ref_dir.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(TOK_DIR)

    gen_tied = backbone(SEEDS["gen-tied"], "embed/shared")
    write_checkpoint(OUT / "gen-tied", config("Qwen3ForCausalLM", True, False), gen_tied, gen=True)
    gen_sharded = backbone(SEEDS["gen-sharded"], "embed/shared")
    gen_sharded["lm_head.weight"] = embedding(SEEDS["gen-sharded"] + "/lm_head")
    first = ["model.embed_tokens.weight"] + [k for k in gen_sharded if k.startswith("model.layers.0.")]
    write_checkpoint(OUT / "gen-sharded", config("Qwen3ForCausalLM", False, True), gen_sharded, gen=True,
                     shards=[first, [k for k in gen_sharded if k not in first]])
    stream = {**backbone(SEEDS["stream"], "embed/shared"), **stream_heads(SEEDS["stream"])}
    write_checkpoint(OUT / "stream", config("Qwen3ForGuardModel", True, False, stream=True), stream, gen=False)
    cons_w, cons = build_constructed(tok)
    write_checkpoint(OUT / "stream-constructed", config("Qwen3ForGuardModel", True, False, stream=True),
                     cons_w, gen=False)
    write_json(OUT / "stream-constructed/construction.json", cons)
    print("construction:", cons)

    rend, toks = [], {t: AutoTokenizer.from_pretrained(OUT / d) for t, d in [("gen", "gen-tied"), ("stream", "stream")]}
    for name, messages, for_gen in CASES:
        for template in ["gen", "stream"]:
            if template == "gen" and not for_gen:
                continue
            text, ids = render(toks[template], messages, template == "gen")
            rend.append({"name": name, "template": template, "messages": messages, "text": text, "token_ids": ids})
    write_cases(ref_dir / "render.json", rend)

    for d in ["gen-tied", "gen-sharded"]:
        tok_d = AutoTokenizer.from_pretrained(OUT / d)
        write_cases(ref_dir / f"{d}.json", gen_reference(OUT / d, tok_d))
    for d in ["stream", "stream-constructed"]:
        ref = StreamReference(OUT / d)
        cases = stream_reference(ref, AutoTokenizer.from_pretrained(OUT / d))
        if d == "stream-constructed":
            check_constructed(ref, cons, cases)
        # Argmax verdicts must be robust to f32 rounding differences in other implementations.
        gap = min(top2_gap(c) for c in cases)
        assert gap >= 1e-4, f"{d}: top-1/top-2 probability gap {gap}; change the seed"
        write_cases(ref_dir / f"{d}.json", cases)
        print(f"  {d}: token counts {[len(c['token_ids']) for c in cases]}, min top-1/top-2 prob gap {gap:.5f}")
    print("all checks passed")


if __name__ == "__main__":
    main()
