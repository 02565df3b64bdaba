"""Host-side tables that let the device score people_focus from token ids (built once per
tokenizer and keyword spec; see `people_focus_device` for how the scan uses them).

Instead of a (vocab × max_token_bytes) byte table scanned byte by byte, every token's bytes are
summarised once here, so the device does one step per token, not per byte:
- `packed`: letters at the token's start (which continue the word in progress), whether it holds a
  separator, whether its first separator run is joiner-only, letters at its end (which start the
  next word);
- `codes`: those letter runs as exact base-27 numbers in CRT lanes (mod 2^32 and mod primes
  < 2^16); `powers` holds 27^n to extend a word in progress: a word of up to `cap - 1` letters
  has a unique lane tuple, so keyword look-ups are exact, never probabilistic (a longer word,
  whose length saturates at `cap`, can be no keyword, so its lanes may be anything);
- `interior`: whole words strictly inside a token that are keyword words (rare; words that are no
  keyword word act as phrase-breaking separators, which is what they are to the counting);
- `tags`: a 16-state automaton finding "<think>" then "</think>" across token boundaries, per
  (token, state): the state after the token and, for each word the token ends, whether that word
  lies inside the block.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from omni_jax.rewards import keywords as kw
from omni_jax.rewards.keywords import CLOSE_TAG, OPEN_TAG

NUM_TAG_STATES = len(OPEN_TAG) + len(CLOSE_TAG) + 1  # 7 before, 8 inside, 1 closed
INSIDE_FIRST, CLOSED = len(OPEN_TAG), len(OPEN_TAG) + len(CLOSE_TAG)
LEN_BITS = 6  # letter counts are kept saturated at max_word_letters + 1 < 64


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2 byte-level alphabet: the character that stands for each byte in token strings."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_bytes(tokenizer) -> list[bytes]:
    """Bytes each id decodes to with skip_special_tokens=True; index = id (missing ids → b"")."""
    backend = tokenizer.backend_tokenizer
    if type(backend.decoder).__name__ != "ByteLevel":
        raise ValueError(
            f"people_focus on device needs a byte-level BPE tokenizer (as Qwen2.5-Omni's); this one "
            f"decodes with {type(backend.decoder).__name__}: use people_focus.score_text on decoded text"
        )
    size = backend.get_vocab_size(with_added_tokens=True)
    added = backend.get_added_tokens_decoder()
    size = max(size, max(added, default=-1) + 1)
    decoder = _byte_level_decoder()
    out = [b""] * size
    for token, i in backend.get_vocab(with_added_tokens=False).items():
        try:
            out[i] = bytes(decoder[c] for c in token)
        except KeyError as err:
            raise ValueError(f"token {i} {token!r} is not in the byte-level alphabet") from err
    for i, tok in added.items():
        out[i] = b"" if tok.special else tok.content.encode("utf-8")
    return out


def _kmp(pattern: bytes) -> np.ndarray:
    """dfa[j, c]: how many bytes of `pattern` are matched after byte c when j were matched."""
    dfa = np.zeros((len(pattern), 256), np.int32)
    for j in range(len(pattern)):
        for c in range(256):
            seen = pattern[:j] + bytes([c])
            dfa[j, c] = max(k for k in range(len(seen) + 1) if pattern.startswith(seen[len(seen) - k :]))
    return dfa


def tag_automaton() -> tuple[np.ndarray, np.ndarray]:
    """(next_state int32[16, 256], phase int32[16]); phase 0 before, 1 inside, 2 after the block."""
    nxt = np.zeros((NUM_TAG_STATES, 256), np.int32)
    dfa_open, dfa_close = _kmp(OPEN_TAG), _kmp(CLOSE_TAG)
    nxt[:INSIDE_FIRST] = np.where(dfa_open == len(OPEN_TAG), INSIDE_FIRST, dfa_open)
    nxt[INSIDE_FIRST:CLOSED] = np.where(dfa_close == len(CLOSE_TAG), CLOSED, INSIDE_FIRST + dfa_close)
    nxt[CLOSED] = CLOSED
    phase = np.array([0] * INSIDE_FIRST + [1] * len(CLOSE_TAG) + [2], np.int32)
    return nxt, phase


def _primes_below_2_16():
    n = 65535
    while True:
        if all(n % d for d in range(2, int(n**0.5) + 1)):
            yield n
        n -= 1


def lane_moduli(max_word_letters: int) -> tuple[int, ...]:
    """Moduli whose product exceeds 27^max_word_letters (0 stands for 2^32: plain uint32 wrap)."""
    moduli, product = [0], 2**32
    primes = _primes_below_2_16()
    while product <= 27**max_word_letters:
        p = next(primes)
        moduli.append(p)
        product *= p
    return tuple(moduli)


def word_code(word: bytes) -> int:
    """The exact base-27 number of an ASCII-letter word (a/A = 1 … z/Z = 26)."""
    code = 0
    for b in word.lower():
        code = code * 27 + (b - 96)
    return code


def _lanes(value: int, moduli) -> list[int]:
    return [value % (m or 2**32) for m in moduli]


@dataclasses.dataclass(frozen=True)
class Tables:
    """Everything the device scan reads (numpy; V = vocab rows + 1 empty row for masked ids)."""

    moduli: tuple[int, ...]     # lanes; 0 means 2^32
    cap: int                    # saturated word length (max_word_letters + 1)
    packed: np.ndarray          # uint16[V]: n_pre | n_suf << 6 | has_sep << 12 | sep0_joiner << 13
    codes: np.ndarray           # uint32[V, 2, lanes]: prefix code, suffix code
    powers: np.ndarray          # uint32[cap + 1, lanes]: 27^n
    interior: np.ndarray        # int32[V, R]: valid | joiner_after << 1 | (cat+1) << 8 | pid << 16
    tags: np.ndarray            # uint8/16/int32[V * 16]: next_state | inside_bits << 4 (bit 0: the
                                #   word ended by the first separator, bit 1+r: interior word r)
    hash_bits: int
    hash_mult: np.ndarray       # uint32[lanes + 1]
    slot_len: np.ndarray        # int32[S]: word length, -1 for an empty slot
    slot_lanes: np.ndarray      # uint32[S, lanes]
    slot_value: np.ndarray      # int32[S]: (cat+1) | pid << 8
    phrase: tuple[np.ndarray, ...]  # for k = 2..K: int32[(P+1)^k]: category or -1
    num_phrase_words: int       # P
    weights: np.ndarray         # float32[C]
    normaliser: float
    whole_text: bool

    @property
    def empty_id(self) -> int:
        return self.packed.shape[0] - 1

    def nbytes(self) -> int:
        arrays = [self.packed, self.codes, self.powers, self.interior, self.tags, self.slot_len, self.slot_lanes,
                  self.slot_value, *self.phrase]
        return int(sum(a.nbytes for a in arrays))


def _word_info(spec: kw.PeopleFocusSpec):
    """word → (category as a single-word keyword or -1, phrase-word id or 0); phrase tables."""
    if len(spec.categories) > 254:
        raise ValueError(f"people_focus has {len(spec.categories)} categories; at most 254 are supported")
    phrase_words = sorted({w for k in spec.keywords if len(k) > 1 for w in k})
    pid = {w: i + 1 for i, w in enumerate(phrase_words)}
    info = {w: [-1, pid[w]] for w in phrase_words}
    for key, cat in spec.keywords.items():
        if len(key) == 1:
            info.setdefault(key[0], [-1, 0])[0] = cat
    base = len(phrase_words) + 1
    if base ** spec.max_phrase_words > 2**24:
        raise ValueError(
            f"people_focus phrases use {len(phrase_words)} distinct words in phrases of up to "
            f"{spec.max_phrase_words} words: the phrase table would need {base}^{spec.max_phrase_words} "
            "entries; use fewer or shorter phrases"
        )
    tables = []
    for k in range(2, spec.max_phrase_words + 1):
        table = np.full(base**k, -1, np.int32)
        for key, cat in spec.keywords.items():
            if len(key) == k:
                index = 0
                for w in key:
                    index = index * base + pid[w]
                table[index] = cat
        tables.append(table)
    return {w.encode(): tuple(v) for w, v in info.items()}, tuple(tables), len(phrase_words)


def hash_index(lanes: np.ndarray, length: np.ndarray, mult: np.ndarray, bits: int) -> np.ndarray:
    """Slot of a word: uint32 multiply-xor of its lanes and length, top `bits` bits (numpy twin
    of the device's look-up)."""
    h = length.astype(np.uint32) * mult[-1]
    for i in range(lanes.shape[-1]):
        h ^= lanes[..., i].astype(np.uint32) * mult[i]
    return (h >> np.uint32(32 - bits)).astype(np.int32)


def _hash_table(info, moduli):
    words = list(info)
    lanes = np.array([_lanes(word_code(w), moduli) for w in words], np.uint32).reshape(len(words), len(moduli))
    lengths = np.array([len(w) for w in words], np.int32)
    rng = np.random.default_rng(0)
    bits = max(4, int(np.ceil(np.log2(max(1, 4 * len(words))))))
    while True:
        for _ in range(64):
            mult = (rng.integers(0, 2**31, len(moduli) + 1, dtype=np.uint32) * 2 + 1).astype(np.uint32)
            slots = hash_index(lanes, lengths, mult, bits)
            if len(set(slots.tolist())) == len(words):
                size = 2**bits
                slot_len = np.full(size, -1, np.int32)
                slot_lanes = np.zeros((size, len(moduli)), np.uint32)
                slot_value = np.zeros(size, np.int32)
                for i, w in enumerate(words):
                    cat, pid = info[w]
                    slot_len[slots[i]], slot_lanes[slots[i]] = lengths[i], lanes[i]
                    slot_value[slots[i]] = (cat + 1) | (pid << 8)
                return bits, mult, slot_len, slot_lanes, slot_value
        bits += 1


def build_tables(tokenizer, spec: kw.PeopleFocusSpec) -> Tables:
    """Summarise every token of `tokenizer` for the keyword spec (host, numpy, seconds at 150k)."""
    info, phrase, num_phrase_words = _word_info(spec)
    max_letters = max(len(w) for w in info)
    if max_letters + 1 >= 2**LEN_BITS:
        raise ValueError(f"people_focus keyword words must have < {2**LEN_BITS - 1} letters")
    moduli = lane_moduli(max_letters)
    cap = max_letters + 1
    pieces = token_bytes(tokenizer) + [b""]  # last row: masked / unknown ids
    vocab = len(pieces)
    packed = np.zeros(vocab, np.uint16)
    codes = np.zeros((vocab, 2, len(moduli)), np.uint32)
    interiors: list[list[tuple[int, int]]] = []  # per token: (packed word, terminator offset)
    first_sep = np.full(vocab, -1, np.int32)
    for t, data in enumerate(pieces):
        runs = [(m.group(1) is not None, m.start(), m.end()) for m in kw._ITEMS.finditer(data)]
        n_pre = runs[0][2] if runs and runs[0][0] else 0
        codes[t, 0] = _lanes(word_code(data[:n_pre]), moduli)
        words: list[tuple[int, int]] = []
        if n_pre == len(data):
            packed[t] = min(n_pre, cap)
            interiors.append(words)
            continue
        first_sep[t] = n_pre
        last_letters = runs[-1][0] and len(runs) > 1
        n_suf = runs[-1][2] - runs[-1][1] if last_letters else 0
        codes[t, 1] = _lanes(word_code(data[len(data) - n_suf :]), moduli)
        joiner = True  # of the separator run in progress (interior non-keyword words break it)
        sep0_joiner = None
        for is_word, s, e in runs[1 if n_pre else 0 : len(runs) - (1 if last_letters else 0)]:
            if not is_word:
                joiner &= all(b in kw.JOINER_BYTES for b in data[s:e])
            elif data[s:e].lower() in info:
                cat, pid = info[data[s:e].lower()]
                if sep0_joiner is None:
                    sep0_joiner = joiner
                else:
                    words[-1] = (words[-1][0] | (int(joiner) << 1), words[-1][1])
                words.append((1 | ((cat + 1) << 8) | (pid << 16), e))
                joiner = True
            else:
                joiner = False
        if sep0_joiner is None:
            sep0_joiner = joiner
        elif words:
            words[-1] = (words[-1][0] | (int(joiner) << 1), words[-1][1])
        packed[t] = min(n_pre, cap) | (min(n_suf, cap) << LEN_BITS) | (1 << 12) | (int(sep0_joiner) << 13)
        interiors.append(words)
    num_interior = max(len(w) for w in interiors)
    if num_interior > 27:
        raise ValueError(f"a token holds {num_interior} keyword words; at most 27 are supported")
    interior = np.zeros((vocab, num_interior), np.int32)
    term = np.full((vocab, 1 + num_interior), -1, np.int32)
    term[:, 0] = first_sep
    for t, words in enumerate(interiors):
        for r, (value, end) in enumerate(words):
            interior[t, r], term[t, 1 + r] = value, end
    tags = _tag_tables(pieces, term)
    bits, mult, slot_len, slot_lanes, slot_value = _hash_table(info, moduli)
    powers = np.array([_lanes(27**n, moduli) for n in range(cap + 1)], np.uint32)
    return Tables(
        moduli=moduli, cap=cap, packed=packed, codes=codes, powers=powers, interior=interior, tags=tags,
        hash_bits=bits, hash_mult=mult, slot_len=slot_len, slot_lanes=slot_lanes,
        slot_value=slot_value, phrase=phrase, num_phrase_words=num_phrase_words,
        weights=np.asarray(spec.weights, np.float32), normaliser=spec.normaliser,
        whole_text=spec.missing_think == "whole_text",
    )


def _tag_tables(pieces: list[bytes], term: np.ndarray) -> np.ndarray:
    """Run the tag automaton over every token from each of the 16 states at once (numpy).

    A word counts as inside the block when the phase is "inside" both before and after the byte
    that ends it: this keeps out the "think" of "<think>" (before: outside) and of "</think>"
    (its ending ">" closes the block).
    """
    nxt, phase = tag_automaton()
    vocab, longest = len(pieces), max(len(p) for p in pieces)
    data = np.zeros((vocab, max(longest, 1)), np.int32)
    lengths = np.array([len(p) for p in pieces], np.int32)
    for t, p in enumerate(pieces):
        data[t, : len(p)] = np.frombuffer(p, np.uint8)
    state = np.broadcast_to(np.arange(NUM_TAG_STATES, dtype=np.int32), (vocab, NUM_TAG_STATES)).copy()
    bits = np.zeros((vocab, NUM_TAG_STATES), np.int32)
    for j in range(longest):
        live = (j < lengths)[:, None]
        new = nxt[state, data[:, j : j + 1]]
        inside = (phase[state] == 1) & (phase[new] == 1)
        for e in range(term.shape[1]):
            hit = (term[:, e] == j)[:, None]
            bits |= (hit & inside).astype(np.int32) << e
        state = np.where(live, new, state)
    width = 4 + term.shape[1]
    dtype = np.uint8 if width <= 8 else np.uint16 if width <= 16 else np.int32
    return (state | (bits << 4)).reshape(-1).astype(dtype)
