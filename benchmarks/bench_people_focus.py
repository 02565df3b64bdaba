"""people_focus from sampled token ids: jitted on-device scan vs batch_decode + Python reference.

    python benchmarks/bench_people_focus.py [--batch 1024] [--tokens 1024] [--repeats 3]

Both systems score the same 1024 completions of ~1024 tokens (English-like <context>/<think>/
<answer> text with keywords, punctuation, digits, rare words and some non-ASCII), under two
tokenizers: the shipped tiny byte-level BPE (2k) and a byte-level BPE trained here to Qwen2.5's
151,643 regular tokens (+ its special tokens). Prints a markdown table (median of --repeats runs,
compile time apart), checks that both systems give the same scores, reports the size of the
per-token tables, and writes a bar chart PNG.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from omni_jax.rewards import keywords as kw  # noqa: E402
from omni_jax.rewards import people_focus as pf  # noqa: E402
from omni_jax.tokenizer import SPECIAL_TOKENS, load_tokenizer  # noqa: E402

COMMON = """the a an and or but of in on at to from with by for as is are was were be it its this that
these there what which who why how when where not no can could will would should may might have has
had they them their then next finally because so therefore however also question answer option
choose correct video audio clip moment first second appears seems shows clearly likely""".split()
SYLLABLES = [a + b for a in "b c d f g h k l m n p r s t v w z ch sh th st pr tr".split()
             for b in "a e i o u ai ea ou ie oo ar er or in an on en".split()]


def make_words(rng: np.random.Generator) -> list[str]:
    """Vocabulary for the texts: every keyword form, common words, and pseudo-words (names,
    rare words) that a big vocabulary holds as whole tokens."""
    keywords = sorted({" ".join(k) for k in kw.resolve(None).keywords})
    pseudo = ["".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(3000)]
    return keywords, COMMON, pseudo


def sentence(rng: np.random.Generator, vocab) -> str:
    keywords, common, pseudo = vocab
    words = []
    for _ in range(rng.integers(6, 18)):
        r = rng.random()
        pool = keywords if r < 0.05 else pseudo if r < 0.15 else common
        word = str(rng.choice(pool))
        if rng.random() < 0.05:
            word = word.upper()
        words.append(word)
        if rng.random() < 0.08:
            words.append(str(rng.choice(["(1)", "3.5s", "[Frame 12]", "—", "’s", "café", "2", "-"])))
    text = " ".join(words)
    return text[0].upper() + text[1:] + str(rng.choice([".", ".", "!", "?", ";", ":"]))


def completions(tokenizer, n: int, max_tokens: int, rng, vocab) -> tuple[np.ndarray, np.ndarray]:
    """ids int32[n, max_tokens], mask bool[n, max_tokens]: each row a whole completion whose
    <think> block fills it to just under max_tokens."""
    pool = [sentence(rng, vocab) for _ in range(4000)]
    lengths = [len(x) for x in tokenizer(pool).input_ids]
    ids = np.full((n, max_tokens), tokenizer.pad_token_id, np.int32)
    mask = np.zeros((n, max_tokens), bool)
    for i in tqdm(range(n), desc=f"texts ({len(tokenizer)} vocab)", leave=False):
        picks, budget = [], max_tokens - 60  # room for the context, tags and answer
        while budget > 0:
            picks.append(int(rng.integers(len(pool))))
            budget -= lengths[picks[-1]]
        while True:
            think = " ".join(pool[j] for j in picks[3:])
            context = " ".join(pool[j] for j in picks[:3])
            row = tokenizer.encode(f"<context>{context}</context><think>{think}</think><answer>B</answer>")
            if len(row) <= max_tokens:
                break
            picks.pop()
        ids[i, : len(row)], mask[i, : len(row)] = row, True
    return ids, mask


def train_big_tokenizer(vocab_size: int, rng, vocab):
    """A byte-level BPE with Qwen2.5's number of regular tokens and its special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    keywords, common, pseudo = vocab
    extra = ["".join(rng.choice(SYLLABLES, rng.integers(1, 5))) for _ in range(400_000)]
    lines = [sentence(rng, vocab) for _ in range(20_000)]
    lines += [" ".join(extra[i : i + 20]) for i in range(0, len(extra), 20)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.pad_token, fast.eos_token = "<|endoftext|>", "<|im_end|>"
    return fast


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench(name, tokenizer, ids, mask, repeats):
    spec = kw.resolve(None)
    start = time.perf_counter()
    scorer = pf.build(tokenizer, spec)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    scorer(ids, mask).block_until_ready()
    compile_s = time.perf_counter() - start
    device_s, device = timed(lambda: np.asarray(scorer(ids, mask).block_until_ready()), repeats)
    rows = [row[m] for row, m in zip(ids, mask)]
    decode_s, texts = timed(lambda: tokenizer.batch_decode(rows, skip_special_tokens=True), repeats)
    reference_s, reference = timed(lambda: np.array([pf.score_text(t, spec) for t in texts]), repeats)
    diff = float(np.max(np.abs(device - reference)))
    tables = scorer.tables
    longest = max(len(p) for p in pf_token_bytes(tokenizer))
    return dict(
        name=name, vocab=len(tokenizer), tokens=int(mask.sum()), build_s=build_s, compile_s=compile_s,
        device_s=device_s, decode_s=decode_s, reference_s=reference_s,
        speedup=(decode_s + reference_s) / device_s, max_diff=diff, mean_score=float(reference.mean()),
        table_mb=tables.nbytes() / 2**20, byte_table_mb=len(tokenizer) * longest / 2**20, longest=longest,
    )


def pf_token_bytes(tokenizer):
    from omni_jax.rewards.token_tables import token_bytes

    return token_bytes(tokenizer)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-vocab", type=int, default=151_643, help="0 skips the big tokenizer")
    parser.add_argument("--png", default=os.path.join(os.path.dirname(__file__), "people_focus.png"))
    args = parser.parse_args()

    import jax

    rng = np.random.default_rng(0)
    vocab = make_words(rng)
    cases = [("tiny BPE", load_tokenizer("tiny"))]
    if args.big_vocab:
        start = time.perf_counter()
        cases.append((f"BPE {args.big_vocab // 1000}k", train_big_tokenizer(args.big_vocab, rng, vocab)))
        print(f"trained the {args.big_vocab}-token BPE in {time.perf_counter() - start:.1f} s")
    results = []
    for name, tokenizer in tqdm(cases, desc="tokenizers"):
        ids, mask = completions(tokenizer, args.batch, args.tokens, rng, vocab)
        results.append(bench(name, tokenizer, ids, mask, args.repeats))

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}; batch {args.batch} x {args.tokens} tokens, "
          f"median of {args.repeats}")
    print("| tokenizer | vocab | real tokens | jitted people_focus (s) | batch_decode (s) | Python reference (s) "
          "| decode + reference (s) | speed-up | max abs diff | compile (s) | table build (s) | tables (MiB) "
          "| byte table V x max bytes (MiB) |")
    print("|---" * 13 + "|")
    for r in results:
        print(f"| {r['name']} | {r['vocab']} | {r['tokens']} | {r['device_s']:.3f} | {r['decode_s']:.3f} | "
              f"{r['reference_s']:.3f} | {r['decode_s'] + r['reference_s']:.3f} | {r['speedup']:.1f}x | "
              f"{r['max_diff']:.1e} | {r['compile_s']:.1f} | {r['build_s']:.1f} | {r['table_mb']:.2f} | "
              f"{r['byte_table_mb']:.2f} ({r['longest']} B) |")
    means = ", ".join(f"{r['name']} {r['mean_score']:.3f}" for r in results)
    print(f"mean people_focus score: {means}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(results))
    ax.bar(x - 0.2, [r["decode_s"] + r["reference_s"] for r in results], 0.4, label="batch_decode + Python")
    ax.bar(x + 0.2, [r["device_s"] for r in results], 0.4, label="jitted on ids")
    ax.set_xticks(x, [f"{r['name']}\n{r['speedup']:.1f}x" for r in results])
    ax.set_ylabel("seconds per batch")
    ax.set_title(f"people_focus, {args.batch} x {args.tokens} tokens, CPU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    print(f"chart: {args.png}")


if __name__ == "__main__":
    main()
