"""Synthetic video questions whose answers follow from the pixels and the sound: the default data.

Each record is a short clip (default 8 frames of 56x56 at 4 fps = 2 s) of stick figures with a
coloured shirt on a coloured background, moving in one direction, and a 16 kHz tone track, with
a four-way multiple-choice question about one of: the shirt colour, the direction of motion,
the number of people, the pitch of the tone (high / low / rising / falling), or the number of
beeps. Frames and waveform are generated as arrays (no codec in the loop, exact colours), so
hundreds of records take well under a second each and the tiny model sees few tokens.

`make_record(i, seed)` is a pure function of (i, seed); `SyntheticSource` indexes it.
"""

from __future__ import annotations

import numpy as np

COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
    "purple": (140, 60, 180), "orange": (240, 140, 30), "white": (245, 245, 245), "black": (20, 20, 20),
}
BACKGROUNDS = {"gray": (128, 128, 128), "teal": (40, 130, 130), "brown": (120, 85, 60), "pink": (230, 160, 180)}
SKIN = (225, 180, 140)
DIRECTIONS = ("left", "right", "up", "down")
PITCHES = ("high", "low", "rising", "falling")
NUMBER_WORDS = ("one", "two", "three", "four")
QUESTION_KINDS = ("colour", "direction", "count", "pitch", "beeps")
LETTERS = "ABCD"


def _draw_person(frame: np.ndarray, x: int, y: int, shirt, scale: float) -> None:
    """A stick figure whose top-left corner is (x, y): head, shirt, legs. Clipped to the frame."""
    H, W, _ = frame.shape

    def box(x0, y0, w, h, colour):
        x1, y1 = max(0, x0), max(0, y0)
        x2, y2 = min(W, x0 + w), min(H, y0 + h)
        if x2 > x1 and y2 > y1:
            frame[y1:y2, x1:x2] = colour

    s = scale
    box(x + round(2 * s), y, round(4 * s), round(4 * s), SKIN)  # head
    box(x, y + round(4 * s), round(8 * s), round(7 * s), shirt)  # shirt and arms
    box(x + round(1 * s), y + round(11 * s), round(2 * s), round(5 * s), (30, 30, 40))  # legs
    box(x + round(5 * s), y + round(11 * s), round(2 * s), round(5 * s), (30, 30, 40))


def _render(rng, size: int, num_frames: int, shirt, background, n_people: int, direction: str) -> np.ndarray:
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    scale = size / 56
    fig_w, fig_h = round(8 * scale), round(16 * scale)
    travel = size // 3
    dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
    # Starting points leave room to travel in the chosen direction.
    starts = []
    for p in range(n_people):
        x0 = int(rng.integers(0, size - fig_w)) if dx == 0 else (
            size - fig_w - int(rng.integers(0, 4)) if dx < 0 else int(rng.integers(0, 4)))
        y0 = int(rng.integers(0, size - fig_h)) if dy == 0 else (
            size - fig_h - int(rng.integers(0, 4)) if dy < 0 else int(rng.integers(0, 4)))
        # spread people across the frame in the other axis so they do not overlap
        if dx != 0:
            y0 = int(p * (size - fig_h) / max(1, n_people - 1)) if n_people > 1 else y0
        else:
            x0 = int(p * (size - fig_w) / max(1, n_people - 1)) if n_people > 1 else x0
        starts.append((x0, y0))
    for t in range(num_frames):
        frames[t] = background
        step = round(travel * t / max(1, num_frames - 1))
        for x0, y0 in starts:
            _draw_person(frames[t], x0 + dx * step, y0 + dy * step, shirt, scale)
    return frames


def _tone(rng, seconds: float, sampling_rate: int, pitch: str, beeps: int) -> np.ndarray:
    n = int(seconds * sampling_rate)
    t = np.arange(n) / sampling_rate
    f0, f1 = {"high": (1760.0, 1760.0), "low": (220.0, 220.0), "rising": (220.0, 1760.0),
              "falling": (1760.0, 220.0)}[pitch]
    freq = f0 * (f1 / f0) ** (t / seconds)  # exponential sweep (constant for high / low)
    phase = 2 * np.pi * np.cumsum(freq) / sampling_rate
    wave = 0.3 * np.sin(phase)
    # `beeps` equal on-segments separated by silences
    gate = np.zeros(n)
    slot = n // (2 * beeps)
    for b in range(beeps):
        gate[(2 * b) * slot + slot // 2 : (2 * b + 1) * slot + slot // 2] = 1.0
    wave = wave * gate + 0.002 * rng.standard_normal(n)
    return wave.astype(np.float32)


def _options(rng, correct: str, pool) -> tuple[list[str], str]:
    others = [p for p in pool if p != correct]
    choice = list(rng.choice(others, size=3, replace=False)) + [correct]
    order = rng.permutation(4)
    opts = [str(choice[k]) for k in order]
    letter = LETTERS[opts.index(correct)]
    return [f"{LETTERS[k]}. {o}" for k, o in enumerate(opts)], letter


def make_record(index: int, seed: int = 0, *, size: int = 56, num_frames: int = 8, fps: float = 4.0,
                sampling_rate: int = 16000) -> dict:
    """Record `index` of the synthetic source (schema of omni_jax.data.sources), a pure function."""
    rng = np.random.default_rng([seed, index])
    shirt_name = str(rng.choice(list(COLOURS)))
    bg_name = str(rng.choice(list(BACKGROUNDS)))
    n_people = int(rng.integers(1, 5))
    direction = str(rng.choice(DIRECTIONS))
    pitch = str(rng.choice(PITCHES))
    beeps = int(rng.integers(1, 5))
    kind = QUESTION_KINDS[index % len(QUESTION_KINDS)]
    frames = _render(rng, size, num_frames, COLOURS[shirt_name], BACKGROUNDS[bg_name], n_people, direction)
    wave = _tone(rng, num_frames / fps, sampling_rate, pitch, beeps)

    people = "one person" if n_people == 1 else f"{NUMBER_WORDS[n_people - 1]} people"
    wear = "wears" if n_people == 1 else "wear"
    scene = (f"The video shows {people} on a {bg_name} background. The {'person' if n_people == 1 else 'people'} "
             f"{wear} a {shirt_name} shirt and {'walks' if n_people == 1 else 'walk'} {direction}. "
             f"The audio has {NUMBER_WORDS[beeps - 1]} {pitch} beep{'s' if beeps > 1 else ''}.")
    if kind == "colour":
        problem = "What colour is the shirt of the person in the video?"
        options, letter = _options(rng, shirt_name, list(COLOURS))
        whose = "The person's shirt is" if n_people == 1 else "Every person's shirt is"
        reason = f"{whose} {shirt_name}."
    elif kind == "direction":
        problem = "In which direction is the person moving?"
        options, letter = _options(rng, direction, DIRECTIONS)
        reason = f"Across the frames the {'person moves' if n_people == 1 else 'people move'} {direction}."
    elif kind == "count":
        problem = "How many people are in the video?"
        options, letter = _options(rng, NUMBER_WORDS[n_people - 1], NUMBER_WORDS)
        reason = f"I count {people} in every frame."
    elif kind == "pitch":
        problem = "How does the tone in the audio sound?"
        options, letter = _options(rng, pitch, PITCHES)
        reason = f"The tone is {pitch}."
    else:
        problem = "How many beeps are in the audio?"
        options, letter = _options(rng, NUMBER_WORDS[beeps - 1], NUMBER_WORDS)
        reason = f"I hear {NUMBER_WORDS[beeps - 1]} separate beep{'s' if beeps > 1 else ''}."
    solution = (f"<context>{scene}</context><think>{reason} So the answer is {letter}.</think>"
                f"<answer>{letter}</answer>")
    return {
        "id": f"synthetic-{seed}-{index}", "source": "synthetic", "data_type": "video",
        "video": frames, "video_fps": fps, "image": None, "audio": wave,
        "problem": problem, "problem_type": "multiple choice", "options": options,
        "solution": solution, "answer": letter,
    }


class SyntheticSource:
    """`num_examples` synthetic records, generated on access (nothing stored)."""

    name = "synthetic"

    def __init__(self, num_examples: int = 1024, seed: int = 0, **render_kwargs):
        self._n, self._seed, self._kw = num_examples, seed, render_kwargs

    def __len__(self):
        return self._n

    def __getitem__(self, i):
        if not 0 <= i < self._n:
            raise IndexError(i)
        return make_record(int(i), self._seed, **self._kw)
