"""Choose one frame per event from an [events, frames] similarity matrix.

`monotone_frames` is the plan's monotone dynamic programme: event e gets frame f_e with
f_0 <= f_1 <= ... (the text's order of events is never reversed in time), maximising

    sum_e sim[e, f_e] - lambda_smooth * sum_{e>0} (f_e - f_{e-1})

(the jump penalty keeps consecutive events on nearby frames; 0 gives the best monotone match).
Run under `jax.jit`: one [F, F] max per event in a `lax.scan`, then a backward scan over the
back-pointers. `argmax_frames` is the per-event baseline without the constraint.
Padding rows (events) and columns (frames) come from `pad_similarity`, so one compiled programme
serves every answer of a bucket.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NEG = -1e9  # similarity of a padded frame: never chosen


def pad_similarity(sim: np.ndarray, event_bucket: int = 8, frame_bucket: int = 16) -> np.ndarray:
    """float32[E, F] → [E', F'] padded up to multiples of the buckets.

    Padded events (rows) are all zeros: placed after the real ones they stay on the last real
    event's frame (any jump costs >= 0), so they never change the real events' choice. Padded
    frames (columns) are NEG: never chosen.
    """
    e, f = sim.shape
    ep, fp = -(-max(e, 1) // event_bucket) * event_bucket, -(-max(f, 1) // frame_bucket) * frame_bucket
    out = np.zeros((ep, fp), np.float32)
    out[:, f:] = NEG
    out[:e, :f] = sim
    out[e:, f:] = NEG
    return out


@jax.jit
def monotone_frames(sim: jax.Array, lambda_smooth: jax.Array) -> tuple[jax.Array, jax.Array]:
    """sim: float32[E, F]; lambda_smooth: float scalar >= 0.

    Returns (int32[E] non-decreasing frame per event, float32 objective of that choice).
    Ties go to the earliest frame.
    """
    e, f = sim.shape
    j = jnp.arange(f)
    jump = (j[:, None] - j[None, :]).astype(jnp.float32)  # [to, from]
    allowed = jump >= 0
    penalty = jnp.where(allowed, lambda_smooth * jump, jnp.inf)

    def forward(prev, row):
        cand = prev[None, :] - penalty  # [to, from]
        back = jnp.argmax(cand, axis=1).astype(jnp.int32)
        best = jnp.take_along_axis(cand, back[:, None], axis=1)[:, 0]
        return best + row, back

    first = sim[0]
    last, backs = jax.lax.scan(forward, first, sim[1:])
    end = jnp.argmax(last).astype(jnp.int32)

    def backward(frame, back):
        prev = back[frame]
        return prev, prev

    _, earlier = jax.lax.scan(backward, end, backs, reverse=True)
    frames = jnp.concatenate([earlier, end[None]])
    return frames, last[end]


@jax.jit
def argmax_frames(sim: jax.Array) -> jax.Array:
    """int32[E]: each event's own best frame (no order constraint)."""
    return jnp.argmax(sim, axis=1).astype(jnp.int32)


def objective(sim: np.ndarray, frames, lambda_smooth: float) -> float:
    """The DP's objective for an assignment (NumPy, for tests and reports)."""
    frames = np.asarray(frames)
    jumps = np.diff(frames)
    return float(sim[np.arange(len(frames)), frames].sum() - lambda_smooth * jumps.sum())


def margins(sim: np.ndarray, frames) -> np.ndarray:
    """float32[E]: sim at the chosen frame minus the best sim of any other frame (runner-up)."""
    sim = np.asarray(sim, np.float32)
    frames = np.asarray(frames)
    rows = np.arange(len(frames))
    chosen = sim[rows, frames]
    others = sim.copy()
    others[rows, frames] = -np.inf
    if sim.shape[1] < 2:
        return np.zeros(len(frames), np.float32)
    return (chosen - others.max(axis=1)).astype(np.float32)


def match(sim: np.ndarray, lambda_smooth: float = 0.0, method: str = "dp") -> np.ndarray:
    """int[E] frame per event for a real (unpadded) float[E, F] similarity matrix.

    method: "dp" (monotone, `monotone_frames`) or "argmax" (per event).
    """
    sim = np.asarray(sim, np.float32)
    e, f = sim.shape
    if e == 0:
        return np.zeros(0, np.int64)
    if f == 0:
        raise ValueError("no frames to match events against")
    if lambda_smooth < 0:
        raise ValueError(f"lambda_smooth must be >= 0, got {lambda_smooth}")
    padded = jnp.asarray(pad_similarity(sim))
    if method == "dp":
        frames, _ = monotone_frames(padded, jnp.float32(lambda_smooth))
    elif method == "argmax":
        frames = argmax_frames(padded)
    else:
        raise ValueError(f"unknown matching method {method!r}: 'dp' or 'argmax'")
    return np.asarray(frames)[:e].astype(np.int64)
