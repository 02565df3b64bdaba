"""The synthetic questions are answerable: oracles recover every answer from the pixels and samples."""

import numpy as np

from omni_jax.data import synthetic

WORDS = {"one": 1, "two": 2, "three": 3, "four": 4}


def blobs(mask):
    """Number of 4-connected components of a boolean image (plain BFS)."""
    seen = np.zeros_like(mask, bool)
    n = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        n += 1
        stack = [(y, x)]
        while stack:
            a, b = stack.pop()
            if 0 <= a < mask.shape[0] and 0 <= b < mask.shape[1] and mask[a, b] and not seen[a, b]:
                seen[a, b] = True
                stack += [(a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)]
    return n


def shirt_of(frame):
    present = [name for name, c in synthetic.COLOURS.items() if (frame == c).all(-1).any()]
    assert len(present) == 1, present
    return present[0]


def centroid(frame, colour):
    ys, xs = np.nonzero((frame == colour).all(-1))
    return xs.mean(), ys.mean()


def dominant(wave):
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.argmax(spec) * 16000 / len(wave)


def oracle_answer(rec):
    frames, wave = rec["video"], rec["audio"]
    shirt = shirt_of(frames[0])
    q = rec["problem"]
    if "colour" in q:
        return shirt
    if "direction" in q:
        (x0, y0), (x1, y1) = centroid(frames[0], synthetic.COLOURS[shirt]), centroid(frames[-1], synthetic.COLOURS[shirt])
        dx, dy = x1 - x0, y1 - y0
        return ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
    if "How many people" in q:
        return {1: "one", 2: "two", 3: "three", 4: "four"}[blobs((frames[0] == synthetic.SKIN).all(-1))]
    envelope = np.convolve(np.abs(wave), np.ones(160) / 160, mode="same") > 0.05
    if "beeps" in q:
        return {1: "one", 2: "two", 3: "three", 4: "four"}[int(np.sum(np.diff(envelope.astype(int)) == 1))]
    on = wave[envelope]
    lo, hi = dominant(on[: len(on) // 2]), dominant(on[len(on) // 2:])
    if abs(lo - hi) < 100:
        return "high" if lo > 1000 else "low"
    return "rising" if hi > lo else "falling"


def test_answers_follow_from_the_media():
    kinds = set()
    for i in range(300):
        rec = synthetic.make_record(i)
        letter = rec["answer"]
        chosen = rec["options"]["ABCD".index(letter)]
        assert chosen.startswith(f"{letter}. ")
        assert chosen[3:] == oracle_answer(rec), (i, rec["problem"], rec["options"], letter)
        assert rec["solution"].endswith(f"<answer>{letter}</answer>")
        kinds.add(rec["problem"])
    assert len(kinds) == 5


def test_pure_function_of_index_and_seed():
    a, b, c = synthetic.make_record(7), synthetic.make_record(7), synthetic.make_record(7, seed=1)
    np.testing.assert_array_equal(a["video"], b["video"])
    assert a["id"] != c["id"]
    assert a["video"].shape == (8, 56, 56, 3) and a["video"].dtype == np.uint8
    assert a["audio"].shape == (32000,) and a["audio"].dtype == np.float32
    # answers are spread over the letters
    letters = [synthetic.make_record(i)["answer"] for i in range(200)]
    assert min(letters.count(x) for x in "ABCD") > 25


def test_source_is_indexable_and_bounded():
    src = synthetic.SyntheticSource(10, seed=3, size=84)
    assert len(src) == 10 and src[9]["video"].shape == (8, 84, 84, 3)
    assert src[9]["answer"] == synthetic.make_record(9, 3, size=84)["answer"]
