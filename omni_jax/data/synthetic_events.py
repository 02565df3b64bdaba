"""Synthetic videos whose events happen at known frames: ground truth for frame timestamps.

A clip of `num_frames` frames shows `num_events` people (each a stick figure in its own shirt
colour, as in `omni_jax.data.synthetic`) standing in a row; event e is "the person in the <colour>
shirt <action>" and happens at frame `event_frames[e]` (strictly increasing): that figure is in
the action's pose there, half-way into it one frame before and after, standing otherwise.
`labels[f, e]` records what frame f shows of event e: 0 standing, 1 half-way, 2 the action.

`oracle_similarity` turns the labels into a noisy [events, frames] similarity with a known
signal (what a perfect-but-noisy CLIP would give), so matching methods can be measured without
real weights: base + 0.06·[action] + 0.03·[half-way] + N(0, noise²).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from omni_jax.data.synthetic import BACKGROUNDS, COLOURS, SKIN

ACTIONS = ("raises both arms", "jumps", "sits down", "waves a hand")


@dataclasses.dataclass(frozen=True)
class EventVideo:
    frames: np.ndarray  # uint8[F, S, S, 3]
    fps: float
    event_frames: np.ndarray  # int64[E], strictly increasing
    descriptions: list[str]  # E event texts, in time order
    labels: np.ndarray  # int8[F, E]


def _box(frame, x0, y0, w, h, colour):
    H, W, _ = frame.shape
    x1, y1, x2, y2 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
    if x2 > x1 and y2 > y1:
        frame[y1:y2, x1:x2] = colour


def _figure(frame, x, y, s, shirt, action: str, amount: float):
    """A stick figure at (x, y) with scale s, `amount` (0..1) of the way into `action`."""
    lift = round(6 * s * amount) if action == "jumps" else 0
    squat = round(5 * s * amount) if action == "sits down" else 0
    y = y - lift + squat
    _box(frame, x + round(2 * s), y, round(4 * s), round(4 * s), SKIN)
    _box(frame, x + round(1 * s), y + round(4 * s), round(6 * s), round(7 * s), shirt)
    legs = round(5 * s) - squat
    _box(frame, x + round(1 * s), y + round(11 * s), round(2 * s), max(1, legs), (30, 30, 40))
    _box(frame, x + round(5 * s), y + round(11 * s), round(2 * s), max(1, legs), (30, 30, 40))
    if action == "raises both arms" and amount > 0:
        up = round(6 * s * amount)
        _box(frame, x - round(1 * s), y + round(4 * s) - up, round(2 * s), up + round(2 * s), shirt)
        _box(frame, x + round(7 * s), y + round(4 * s) - up, round(2 * s), up + round(2 * s), shirt)
    elif action == "waves a hand" and amount > 0:
        _box(frame, x + round(7 * s), y - round(2 * s * amount), round(5 * s), round(2 * s), SKIN)


def make_event_video(seed: int, *, num_frames: int = 16, num_events: int = 4, size: int = 112,
                     fps: float = 1.0) -> EventVideo:
    """A pure function of its arguments."""
    if num_events > min(len(COLOURS), num_frames):
        raise ValueError(f"{num_events} events: at most one per frame ({num_frames}) and per shirt colour ({len(COLOURS)})")
    rng = np.random.default_rng(seed)
    colours = list(rng.choice(list(COLOURS), size=num_events, replace=False))
    actions = [str(rng.choice(ACTIONS)) for _ in range(num_events)]
    event_frames = np.sort(rng.choice(num_frames, size=num_events, replace=False)).astype(np.int64)
    background = BACKGROUNDS[str(rng.choice(list(BACKGROUNDS)))]
    s = size / 112 * 1.6
    slot = size / num_events
    labels = np.zeros((num_frames, num_events), np.int8)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for f in range(num_frames):
        frames[f] = background
        for e in range(num_events):
            d = abs(f - int(event_frames[e]))
            labels[f, e] = 2 if d == 0 else 1 if d == 1 else 0
            x = round(e * slot + slot / 2 - 4 * s)
            _figure(frames[f], x, round(size * 0.55), s, COLOURS[colours[e]], actions[e], labels[f, e] / 2)
    descriptions = [f"the person in the {c} shirt {a}" for c, a in zip(colours, actions)]
    return EventVideo(frames, fps, event_frames, descriptions, labels)


def oracle_similarity(video: EventVideo, noise: float, rng: np.random.Generator, base: float = 0.2) -> np.ndarray:
    """float32[E, F]: the known signal of `video.labels` plus Gaussian noise of std `noise`."""
    signal = np.where(video.labels.T == 2, 0.06, np.where(video.labels.T == 1, 0.03, 0.0))
    return (base + signal + rng.normal(0.0, noise, signal.shape)).astype(np.float32)


def completion_for(video: EventVideo, letter: str = "A") -> str:
    """A well-formed answer whose <think> narrates the events in order (for end-to-end tests)."""
    sentences = " ".join(f"Then {d}." if i else f"First, {d}." for i, d in enumerate(video.descriptions))
    return (f"<context>{len(video.descriptions)} people stand in a row.</context>"
            f"<think>{sentences} So the answer is {letter}.</think><answer>{letter}</answer>")
