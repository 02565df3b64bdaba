"""The jitted people_focus equals the plain-Python reference on any token sequence.

Oracle: `people_focus.count_text` / `score_text` on `tokenizer.decode(ids[mask],
skip_special_tokens=True)`. Shapes are fixed (B, T) so each spec compiles once.
"""

import functools
import random
import string

import hypothesis.strategies as st
import ml_collections
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from omni_jax.rewards import config, keywords as kw, people_focus as pf, people_focus_device as pd
from omni_jax.rewards import token_tables as tt
from omni_jax.tokenizer import load_tokenizer

B, T = 8, 96
TOK = load_tokenizer("tiny")
PIECES = tt.token_bytes(TOK)
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def reference(ids_row, mask_row, spec, tokenizer=TOK):
    """(counts in the think block or None, counts over the whole text) from decoded text."""
    text = tokenizer.decode([int(i) for i, m in zip(ids_row, mask_row) if m], skip_special_tokens=True)
    data = text.encode("utf-8", "surrogatepass")
    block = pf.think_block(data)
    whole = pf.count_words(kw.words_with_joins(data), spec)
    return None if block is None else pf.count_words(kw.words_with_joins(block), spec), whole, text


def check_batch(counter, scorer, spec, ids, mask, tokenizer=TOK):
    inside, whole, closed = (np.asarray(a) for a in counter(ids, mask))
    scores = np.asarray(scorer(ids, mask)) if scorer is not None else None
    for b in range(ids.shape[0]):
        block, whole_ref, text = reference(ids[b], mask[b], spec, tokenizer)
        assert bool(closed[b]) == (block is not None), text
        if block is not None:
            assert inside[b].tolist() == block, text
        assert whole[b].tolist() == whole_ref, text
        if scores is not None:
            assert scores[b] == pytest.approx(pf.score_text(text, spec), abs=1e-6), text


def random_case(word, rng):
    return "".join(c.upper() if rng.random() < 0.3 else c for c in word)


@functools.lru_cache(maxsize=4)
def _pieces(tokenizer):
    pieces = tt.token_bytes(tokenizer)
    specials = [i for i, p in enumerate(pieces) if not p]
    return pieces, {p: i for i, p in enumerate(pieces) if p}, max(len(p) for p in pieces), specials


def segment(data: bytes, rng: random.Random, tokenizer=TOK) -> list[int]:
    """A random tokenisation of `data`: any tokens whose bytes concatenate to it, with special
    tokens (which decode to nothing) sprinkled in."""
    pieces, by_bytes, longest, specials = _pieces(tokenizer)
    ids, i = [], 0
    while i < len(data):
        options = [by_bytes[data[i : i + n]] for n in range(1, longest + 1) if data[i : i + n] in by_bytes]
        ids.append(rng.choice(options))
        i += len(pieces[ids[-1]])
        if rng.random() < 0.05:
            ids.append(rng.choice(specials))
    return ids


def multiword_tokenizer():
    """A byte-level BPE whose merges cross spaces and punctuation ("a b", "man's c"), so tokens
    hold whole keyword words inside them (Qwen's vocabulary rarely does)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    words = ["a", "ab", "ba", "c", "he", "the", "man", "x"]
    seps = [" ", " ", "-", ". ", "'", "é"]
    corpus = [  # half the lines glue separators after words ("a. "), half before ("'a")
        "".join(rng.choice(words) + rng.choice(seps) if line % 2 else rng.choice(seps) + rng.choice(words)
                for _ in range(12))
        for line in range(3000)
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens(["<|endoftext|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.pad_token = "<|endoftext|>"
    return fast


def pack(rows: list[list[int]], rng: random.Random, cut: bool, tokenizer=TOK):
    ids = np.full((B, T), tokenizer.pad_token_id, np.int32)
    mask = np.zeros((B, T), bool)
    for b, row in enumerate(rows):
        row = row[:T]
        ids[b, : len(row)] = row
        mask[b, : len(row)] = True
        if cut and row:
            mask[b, rng.randrange(len(row) + 1) :] = False  # a completion mask's cut
            holes = [rng.randrange(T) for _ in range(rng.randrange(3))]
            mask[b, holes] = False
    return ids, mask


SEPARATORS = [" ", " ", "-", ". ", "'", "é", ", ", "\n", ""]


def text_strategy(words):
    """Texts mixing keyword words (random case), other letters, tags, separators of every class,
    digits and non-ASCII; "dense" runs of words look like the multi-word tokenizer's corpus."""
    word = st.builds(random_case, st.sampled_from(words), st.randoms(use_true_random=False))
    dense = st.lists(st.tuples(word, st.sampled_from(SEPARATORS)).map("".join), max_size=10).map("".join)
    piece = st.one_of(
        word,
        word,
        dense,
        st.text(alphabet=string.ascii_letters, min_size=1, max_size=6),
        st.text(alphabet="abcABC", min_size=10, max_size=20),
        st.sampled_from(["<think>", "</think>", "<think", "think>", "</", "<answer>", "</answer>", "think"]),
        st.text(alphabet=" \t\n\r-", min_size=1, max_size=3),
        st.text(alphabet=".,;:!?'\"()*/<>0123456789_", min_size=1, max_size=3),
        st.text(alphabet="éü漢字\u2019\u2014\u00a0\U0001f642\x00", min_size=1, max_size=2),
        st.just(""),
    )
    body = st.lists(piece, max_size=12).map("".join)
    return st.builds(
        lambda pre, mid, post, opened, closed: pre + ("<think>" if opened else "") + mid + ("</think>" if closed else "") + post,
        body, body, body, st.booleans(), st.booleans(),
    )


DEFAULT = kw.resolve(None)
DEFAULT_WORDS = sorted({w for k in DEFAULT.keywords for w in k}) + ["body language", "color-scheme", "eye  contact"]


@pytest.fixture(scope="module")
def default_fns():
    return pd.build_counter(TOK, DEFAULT), pf.build(TOK)


@settings(max_examples=40, **SETTINGS)
@given(texts=st.lists(text_strategy(DEFAULT_WORDS), min_size=B, max_size=B), seed=st.integers(0, 2**32))
def test_canonical_and_random_tokenisations_match_the_reference(default_fns, texts, seed):
    counter, scorer = default_fns
    rng = random.Random(seed)
    canonical = [TOK.encode(t) for t in texts]
    check_batch(counter, scorer, DEFAULT, *pack(canonical, rng, cut=False))
    check_batch(counter, scorer, DEFAULT, *pack(canonical, rng, cut=True))
    segmented = [segment(t.encode(), rng) for t in texts]
    check_batch(counter, scorer, DEFAULT, *pack(segmented, rng, cut=rng.random() < 0.5))


@settings(max_examples=15, **SETTINGS)
@given(seed=st.integers(0, 2**32))
def test_arbitrary_ids_match_the_reference(default_fns, seed):
    """Uniformly random ids: invalid UTF-8, specials anywhere, any byte next to any other."""
    counter, scorer = default_fns
    rng = random.Random(seed)
    rows = [[rng.randrange(len(PIECES)) for _ in range(rng.randrange(T + 1))] for _ in range(B)]
    check_batch(counter, scorer, DEFAULT, *pack(rows, rng, cut=True))


def test_token_bytes_decode_like_the_tokenizer():
    rng = random.Random(0)
    for _ in range(50):
        ids = [rng.randrange(len(PIECES)) for _ in range(rng.randrange(1, 40))]
        expected = TOK.decode(ids, skip_special_tokens=True)
        assert b"".join(PIECES[i] for i in ids).decode("utf-8", "replace") == expected


def test_ids_outside_the_tokenizer_decode_to_nothing(default_fns):
    counter, scorer = default_fns
    text_ids = TOK.encode("<think>the man smiles</think>")
    row = text_ids[:4] + [len(PIECES) + 7, -3] + text_ids[4:]
    ids, mask = pack([row] + [[]] * (B - 1), random.Random(0), cut=False)
    assert np.asarray(scorer(ids, mask))[0] == pytest.approx(1.5 / 20)


def test_hand_checked_rows_on_device(default_fns):
    counter, scorer = default_fns
    texts = [
        "<context>x</context><think>The woman smiles; the man nodded. Faces, body language, "
        "background and color scheme.</think><answer>A</answer>",  # 4 + 1 − 0.6
        "<think>the theme of the other woman woman</think>",  # 2 people, no "he"
        "no think block: man woman",
        "<think>" + "person " * 30 + "</think>",
    ]
    ids, mask = pack([TOK.encode(t) for t in texts] + [[]] * (B - len(texts)), random.Random(0), cut=False)
    np.testing.assert_allclose(np.asarray(scorer(ids, mask))[:4], [4.4 / 20, 2 / 20, 0.0, 1.0], atol=1e-6)


def random_spec(rng: random.Random, whole_text: bool):
    vocab = ["a", "ab", "ba", "abc", "cab", "bb", "he", "the", "man", "woman", "c", "abcabcabcabcab"]
    words = rng.sample(vocab, rng.randrange(2, len(vocab)))
    vocab = vocab + ["think"]
    categories, used = {}, set()
    for name in ("x", "y", "z"):
        chosen = []
        for _ in range(rng.randrange(1, 5)):
            n = rng.choice([1, 1, 2, 3])
            phrase = " ".join(rng.choice(words) for _ in range(n))
            if phrase not in used and phrase != "think":
                used.add(phrase)
                chosen.append(phrase)
        categories[name] = dict(weight=rng.choice([1.0, 0.5, -0.3, 2.0]), inflect="none", words=chosen)
    categories["x"]["words"].append("think")  # the tags' own word must never count
    cfg = config.people_focus_defaults()
    cfg.categories = ml_collections.ConfigDict(categories)
    cfg.missing_think = "whole_text" if whole_text else "zero"
    cfg.normaliser = rng.choice([1.0, 3.0, 20.0])
    return kw.resolve(cfg), vocab


RANDOM_SPECS = [random_spec(random.Random(seed), whole_text=seed % 2 == 1) for seed in range(4)]
MULTI = multiword_tokenizer()


def test_multiword_tokenizer_has_keyword_words_inside_tokens():
    tables = tt.build_tables(MULTI, RANDOM_SPECS[0][0])
    assert tables.interior.shape[1] >= 2 and (tables.interior[:, 0] & 1).sum() > 20


@pytest.fixture(scope="module", params=range(len(RANDOM_SPECS)))
def random_spec_fns(request):
    spec, vocab = RANDOM_SPECS[request.param]
    tokenizer = TOK if request.param % 2 else MULTI
    return spec, vocab, tokenizer, pd.build_counter(tokenizer, spec), pf.build(tokenizer, spec)


@settings(max_examples=12, **SETTINGS)
@given(seed=st.integers(0, 2**32), data=st.data())
def test_random_keyword_specs_with_phrases_match_the_reference(random_spec_fns, seed, data):
    spec, vocab, tokenizer, counter, scorer = random_spec_fns
    rng = random.Random(seed)
    texts = data.draw(st.lists(text_strategy(vocab + ["a b", "a-b", "a b c", "b c a"]), min_size=B, max_size=B))
    rows = [tokenizer.encode(t) if rng.random() < 0.5 else segment(t.encode(), rng, tokenizer) for t in texts]
    check_batch(counter, scorer, spec, *pack(rows, rng, cut=rng.random() < 0.5, tokenizer=tokenizer), tokenizer)


def test_tag_automaton_finds_the_first_block_like_bytes_find():
    nxt, phase = tt.tag_automaton()
    rng = random.Random(1)
    alphabet = [b"<", b"/", b"t", b"h", b"i", b"n", b"k", b">", b"x", b"<think>", b"</think>"]
    for _ in range(500):
        data = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))
        state, opened_at, closed_at = 0, None, None
        for i, c in enumerate(data):
            state = nxt[state, c]
            if phase[state] == 1 and opened_at is None:
                opened_at = i + 1
            if phase[state] == 2 and closed_at is None:
                closed_at = i + 1
        start = data.find(b"<think>")
        end = data.find(b"</think>", start + 7) if start >= 0 else -1
        assert opened_at == (start + 7 if start >= 0 else None), data
        assert closed_at == (end + 8 if end >= 0 else None), data


def test_lanes_are_exact_up_to_the_longest_keyword_word():
    for letters in (6, 7, 12, 16, 30):
        moduli = tt.lane_moduli(letters)
        product = 1
        for m in moduli:
            product *= m or 2**32
        assert product > 27**letters


def _all_tokens_in_context(tokenizer, spec, counter, repeats, seed):
    """Every token of the vocabulary, several times, each between random keyword-word tokens,
    inside a think block: against the reference, row by row."""
    words = sorted({w for k in spec.keywords for w in k})
    neighbours = [i for w in words for v in (w, " " + w, w.upper()) for i in tokenizer.encode(v)]
    rng = random.Random(seed)
    order = [t for t in range(len(tt.token_bytes(tokenizer))) for _ in range(repeats)]
    rng.shuffle(order)
    opened, closed = tokenizer.encode("<think>"), tokenizer.encode("</think>")
    per_row = (T - len(opened) - len(closed)) // 2
    rows = [opened + [x for t in order[i : i + per_row] for x in (rng.choice(neighbours), t)] + closed
            for i in range(0, len(order), per_row)]
    for i in range(0, len(rows), B):
        chunk = rows[i : i + B] + [[]] * (B - len(rows[i : i + B]))
        check_batch(counter, None, spec, *pack(chunk, rng, cut=False, tokenizer=tokenizer), tokenizer)


def test_every_token_of_the_tiny_vocabulary_in_context(default_fns):
    _all_tokens_in_context(TOK, DEFAULT, default_fns[0], repeats=3, seed=0)


def test_every_token_of_a_multiword_vocabulary_in_context():
    cfg = config.people_focus_defaults()
    cfg.categories = ml_collections.ConfigDict(dict(
        p=dict(weight=1.0, inflect="none", words=["a", "a a", "x a", "the he"]),
        q=dict(weight=0.5, inflect="none", words=["ba", "man x", "c c c"]),
        r=dict(weight=-0.3, inflect="none", words=["he", "ab ba", "think"])))
    spec = kw.resolve(cfg)
    assert tt.build_tables(MULTI, spec).interior.shape[1] >= 2  # tokens with 2+ keyword words inside
    _all_tokens_in_context(MULTI, spec, pd.build_counter(MULTI, spec), repeats=6, seed=1)


def test_words_equal_in_every_lane_are_told_apart_by_length(default_fns):
    """A 14-letter word whose code matches "woman" modulo every lane must not count as "woman"
    (the length check makes the look-up exact, not probabilistic)."""
    tables = default_fns[1].tables
    modulus = 1
    for m in tables.moduli:
        modulus *= m or 2**32
    value = tt.word_code(b"woman")
    while True:
        value += modulus
        digits, v = [], value
        while v:
            digits.append(v % 27)
            v //= 27
        if 0 not in digits:
            break
    collider = "".join(chr(96 + d) for d in reversed(digits))
    assert len(collider) > tables.cap and tt.word_code(collider.encode()) % modulus == tt.word_code(b"woman") % modulus
    counter, scorer = default_fns
    rows = [TOK.encode(f"<think>{collider} woman {collider}</think>")] + [[]] * (B - 1)
    ids, mask = pack(rows, random.Random(0), cut=False)
    assert np.asarray(counter(ids, mask)[0])[0].tolist() == [0, 0, 1]
