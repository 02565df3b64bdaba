"""people_focus on the device: token ids → counts → scores, one `lax.scan` step per token.

The scan runs along the sequence (T steps), vectorised over the batch; its carry is a small state
machine per row (the `keywords` semantics, made incremental):
- `tag`: the "<think>"/"</think>" automaton state (`token_tables.tag_automaton`);
- the word in progress: its letters as exact CRT lanes, its length (saturated) and whether it
  is joined to the previous word by joiner-only bytes;
- `has_prev`, `run_ok`: a previous word exists / the separator run since it is joiner-only;
- a delay line of the last K-1 words (K = longest phrase): their phrase-word ids, joins, and the
  occurrences ending at them not yet counted, because a longer phrase may still cover them;
- counts per category, inside the block and over the whole text.
Per token the tables give everything else (`token_tables.Tables`), so no byte is looked at here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from omni_jax.rewards import token_tables as tt


def _mod(x, m: int):
    return x if m == 0 else x % jnp.uint32(m)


def make_count_fn(tables: tt.Tables, whole_text: bool = True):
    """A pure `counts(ids: int32[B, T], mask: bool[B, T]) -> (inside int32[B, C], whole int32[B, C],
    closed bool[B])`: keyword counts inside the first complete think block and over all text
    (`whole` stays 0 unless `whole_text`, which saves work when no policy needs it)."""
    moduli, cap = tables.moduli, tables.cap
    num_lanes, num_cats = len(moduli), len(tables.weights)
    num_interior = tables.interior.shape[1]
    max_k = len(tables.phrase) + 1
    history = max_k - 1
    base = tables.num_phrase_words + 1
    packed_t = jnp.asarray(tables.packed)
    codes_t = jnp.asarray(tables.codes.reshape(len(tables.packed), -1))
    powers_t = jnp.asarray(tables.powers)
    interior_t = jnp.asarray(tables.interior)
    tags_t = jnp.asarray(tables.tags)
    slot_len = jnp.asarray(tables.slot_len)
    slot_lanes = jnp.asarray(tables.slot_lanes)
    slot_value = jnp.asarray(tables.slot_value)
    mult = jnp.asarray(tables.hash_mult)
    phrase_t = [jnp.asarray(p) for p in tables.phrase]
    shift = jnp.uint32(32 - tables.hash_bits)

    def lookup(lanes, length):
        """(category as a single word or -1, phrase-word id or 0) of the word in progress."""
        h = length.astype(jnp.uint32) * mult[-1]
        for i in range(num_lanes):
            h = h ^ (lanes[i] * mult[i])
        slot = (h >> shift).astype(jnp.int32)
        hit = slot_len[slot] == length
        for i in range(num_lanes):
            hit &= slot_lanes[slot, i] == lanes[i]
        value = jnp.where(hit, slot_value[slot], 0)
        return (value & 255) - 1, value >> 8

    def add(counts, cat, on):
        return counts + jax.nn.one_hot(cat, num_cats, dtype=jnp.int32) * on[:, None].astype(jnp.int32)

    def add_whole(counts, cat, on):
        return add(counts, cat, on) if whole_text else counts

    def arrive(st, on, cat, pid, joined, inside):
        """A word ends (rows where `on`): find occurrences ending at it, settle the oldest."""
        if history == 0:
            st["inside"] = add(st["inside"], cat, on & inside)
            st["whole"] = add_whole(st["whole"], cat, on)
            return st
        wins = [cat]
        ok, index = joined, pid
        for k in range(2, max_k + 1):
            index = st["pid"][:, k - 2] * base ** (k - 1) + index
            wins.append(jnp.where(ok, phrase_t[k - 2][index], -1))
            ok = ok & st["jn"][:, k - 2]
        hist_win = st["win"]  # int32[B, H, K]: occurrence (category) of k+1 words ending at slot
        covers = [w >= 0 for w in wins]
        for n in range(2, max_k + 1):
            wins = [jnp.where(covers[n - 1], -1, w) if k + 1 < n else w for k, w in enumerate(wins)]
            for r in range(1, n):
                for k in range(1, n - r + 1):
                    hist_win = hist_win.at[:, r - 1, k - 1].set(
                        jnp.where(covers[n - 1], -1, hist_win[:, r - 1, k - 1]))
        for k in range(max_k):  # the oldest word can no longer be covered: count it
            cat_old = hist_win[:, history - 1, k]
            st["inside"] = add(st["inside"], cat_old, on & st["ins"][:, history - 1])
            st["whole"] = add_whole(st["whole"], cat_old, on)
        new_win = jnp.stack(wins, axis=1)[:, None, :]
        shifted = {
            "pid": jnp.concatenate([pid[:, None], st["pid"][:, :-1]], axis=1),
            "jn": jnp.concatenate([joined[:, None], st["jn"][:, :-1]], axis=1),
            "ins": jnp.concatenate([inside[:, None], st["ins"][:, :-1]], axis=1),
            "win": jnp.concatenate([new_win, hist_win[:, :-1]], axis=1),
        }
        for key, value in shifted.items():
            mask = on.reshape((-1,) + (1,) * (value.ndim - 1))
            st[key] = jnp.where(mask, value, st[key])
        return st

    def step(st, xs):
        tok, packed, codes, powers = xs
        packed = packed.astype(jnp.int32)
        st = dict(st)
        n_pre, n_suf = packed & 63, (packed >> 6) & 63
        has_sep, sep0_joiner = ((packed >> 12) & 1) == 1, ((packed >> 13) & 1) == 1
        tag_entry = tags_t[tok * tt.NUM_TAG_STATES + st["tag"]].astype(jnp.int32)
        inside_bits = tag_entry >> 4
        # Letters at the token's start continue the word in progress.
        starts = (st["len"] == 0) & (n_pre > 0)
        st["pjoined"] = jnp.where(starts, st["has_prev"] & st["run_ok"], st["pjoined"])
        # 27^n with n saturated at cap: a longer word is no keyword, its lanes may be anything
        lanes = [_mod(_mod(st["lanes"][i] * powers[:, i], m) + codes[:, i], m) for i, m in enumerate(moduli)]
        length = jnp.minimum(st["len"] + n_pre, cap)
        # A separator ends it.
        ends = has_sep & (length > 0)
        cat, pid = lookup(lanes, length)
        st = arrive(st, ends, cat, pid, st["pjoined"], (inside_bits & 1) == 1)
        st["has_prev"] = st["has_prev"] | ends
        st["run_ok"] = jnp.where(has_sep, (st["run_ok"] | ends) & sep0_joiner, st["run_ok"])
        for r in range(num_interior):  # keyword words wholly inside the token
            value = interior_t[tok, r]
            on = (value & 1) == 1
            st = arrive(st, on, ((value >> 8) & 255) - 1, value >> 16,
                        st["has_prev"] & st["run_ok"], ((inside_bits >> (1 + r)) & 1) == 1)
            st["has_prev"] = st["has_prev"] | on
            st["run_ok"] = jnp.where(on, ((value >> 1) & 1) == 1, st["run_ok"])
        # Letters at the token's end start the next word.
        st["pjoined"] = jnp.where(has_sep & (n_suf > 0), st["has_prev"] & st["run_ok"], st["pjoined"])
        st["lanes"] = jnp.stack([jnp.where(has_sep, codes[:, num_lanes + i], lanes[i])
                                 for i in range(num_lanes)])
        st["len"] = jnp.where(has_sep, n_suf, length)
        st["tag"] = tag_entry & 15
        return st, None

    def counts(ids, mask):
        batch = ids.shape[0]
        ids = jnp.where(mask & (ids >= 0) & (ids < tables.empty_id), ids, tables.empty_id)
        false = jnp.zeros(batch, bool)
        st = {
            "tag": jnp.zeros(batch, jnp.int32),
            "len": jnp.zeros(batch, jnp.int32),
            "lanes": jnp.zeros((num_lanes, batch), jnp.uint32),
            "pjoined": false, "has_prev": false, "run_ok": false,
            "pid": jnp.zeros((batch, history), jnp.int32),
            "jn": jnp.zeros((batch, history), bool),
            "ins": jnp.zeros((batch, history), bool),
            "win": jnp.full((batch, history, max_k), -1, jnp.int32),
            "inside": jnp.zeros((batch, num_cats), jnp.int32),
            "whole": jnp.zeros((batch, num_cats), jnp.int32),
        }
        ids_tb = ids.T
        packed_tb = packed_t[ids_tb]
        powers_tb = powers_t[packed_tb.astype(jnp.int32) & 63]
        st, _ = jax.lax.scan(step, st, (ids_tb, packed_tb, codes_t[ids_tb], powers_tb))
        # The end of the text ends the last word; then every waiting occurrence is final.
        phase_inside = (st["tag"] >= tt.INSIDE_FIRST) & (st["tag"] < tt.CLOSED)
        cat, pid = lookup(list(st["lanes"]), st["len"])
        st = arrive(st, st["len"] > 0, cat, pid, st["pjoined"], phase_inside)
        for r in range(history):
            for k in range(max_k):
                st["inside"] = add(st["inside"], st["win"][:, r, k], st["ins"][:, r])
                st["whole"] = add_whole(st["whole"], st["win"][:, r, k], jnp.ones(batch, bool))
        return st["inside"], st["whole"], st["tag"] == tt.CLOSED

    return counts


def make_score_fn(tables: tt.Tables):
    """Pure `scores(ids: int32[B, T], mask: bool[B, T]) -> float32[B]` (see `people_focus.build`)."""
    counts_fn = make_count_fn(tables, whole_text=tables.whole_text)
    weights = jnp.asarray(tables.weights)

    def scores(ids, mask):
        inside, whole, closed = counts_fn(ids, mask)
        fallback = whole if tables.whole_text else jnp.zeros_like(whole)
        counts = jnp.where(closed[:, None], inside, fallback).astype(jnp.float32)
        raw = jnp.sum(counts * weights, axis=1)
        return jnp.clip(raw / tables.normaliser, 0.0, 1.0)

    return scores


def build_scorer(tokenizer, spec):
    """jit(make_score_fn(build_tables(tokenizer, spec))); `.tables` holds the host tables."""
    tables = tt.build_tables(tokenizer, spec)
    fn = jax.jit(make_score_fn(tables))
    fn.tables = tables
    return fn


def build_counter(tokenizer, spec):
    """jit(make_count_fn(...)) for tests and metrics: exact integer counts per category."""
    return jax.jit(make_count_fn(tt.build_tables(tokenizer, spec)))
