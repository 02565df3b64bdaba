"""`add_timestamps`: the plan's two-stage post-processor for one answer.

    new_completion, table = add_timestamps(completion, "clip.mp4", ClipMatcher.load("/ckpt/clip-vit-b32"))

1. events of the `<think>` block (`events.rule_events`, or any `extractor(completion) -> [Event]`);
2. frames: the Thinker's own (default) or one every `interval` seconds (`frames`);
3. one [events, frames] cosine-similarity matrix from batched CLIP encodings (`encode`);
4. one frame per event: the monotone DP (`match`, method "dp") or per-event argmax;
5. `[Frame N: T.XXs]` after each anchor (`insert`).
Bad input (no <think>, no events, unreadable or too-short video, an extractor that fails) never
raises: the completion comes back unchanged and `table.message` says why.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable


from omni_jax.timestamps import match as match_lib
from omni_jax.timestamps.encode import ClipMatcher
from omni_jax.timestamps.events import Event, NoThinkBlock, rule_events, think_span
from omni_jax.timestamps.frames import FrameSet, VideoInputError, interval_frames, thinker_frames
from omni_jax.timestamps.insert import insert_marks

# Jump penalty per frame between consecutive events (cosine-similarity units); see README.
DEFAULT_LAMBDA_SMOOTH = 0.0


@dataclasses.dataclass(frozen=True)
class TimestampRow:
    event: str  # the query matched
    anchor: str
    frame: int
    time: float  # seconds
    similarity: float
    margin: float  # similarity minus the best other frame's (negative: the DP overrode argmax)
    placement: str  # exact | fuzzy | fallback | present


@dataclasses.dataclass
class TimestampTable:
    rows: list[TimestampRow]
    message: str = ""  # why nothing was inserted (bad input), else ""
    num_frames: int = 0

    def to_json(self) -> dict:
        return {"message": self.message, "num_frames": self.num_frames,
                "events": [dataclasses.asdict(r) for r in self.rows]}

    def format(self) -> str:
        if not self.rows:
            return self.message or "no events"
        head = f"{'#':>2}  {'event':<48} {'frame':>5} {'time':>8} {'sim':>7} {'margin':>7}  placement"
        lines = [head, "-" * len(head)]
        for i, r in enumerate(self.rows):
            event = r.event if len(r.event) <= 48 else r.event[:45] + "..."
            lines.append(f"{i:>2}  {event:<48} {r.frame:>5} {r.time:>7.2f}s {r.similarity:>7.4f} "
                         f"{r.margin:>7.4f}  {r.placement}")
        return "\n".join(lines)


def add_timestamps(completion: str, video, clip: ClipMatcher, *, interval: float | None = None, data_cfg=None,
                   frames: FrameSet | None = None, lambda_smooth: float = DEFAULT_LAMBDA_SMOOTH,
                   method: str = "dp", extractor: Callable[[str], list[Event]] | None = None,
                   max_events: int = 16) -> tuple[str, TimestampTable]:
    """(completion with [Frame N: T.XXs] marks, table of the matches).

    video: a path or the file's bytes (ignored when `frames` is given). interval: None for the
    Thinker's frames under `data_cfg` (None: the recipe's data config), else seconds between frames.
    """
    try:
        think_span(completion)
        events = extractor(completion) if extractor else rule_events(completion, max_events=max_events)
    except NoThinkBlock as e:
        return completion, TimestampTable([], str(e))
    except Exception as e:  # a model extractor's endpoint or parse failure must not lose the answer
        return completion, TimestampTable([], f"event extraction failed: {type(e).__name__}: {e}")
    events = list(events)[:max_events]
    if not events:
        return completion, TimestampTable([], "no events: the <think> block has no clause about people or actions")
    if frames is None:
        try:
            frames = (interval_frames(video, interval, shortest_edge=clip.spec.shortest_edge) if interval
                      else thinker_frames(video, data_cfg))
        except VideoInputError as e:
            return completion, TimestampTable([], str(e))
    sim = clip.similarity(frames.frames, [e.query for e in events])
    chosen = match_lib.match(sim, lambda_smooth, method)
    times = frames.times[chosen]
    new, placements = insert_marks(completion, events, chosen, times)
    margin = match_lib.margins(sim, chosen)
    rows = [TimestampRow(e.query, e.anchor, int(f), round(float(t), 2), float(sim[i, f]), float(margin[i]), how)
            for i, (e, f, t, how) in enumerate(zip(events, chosen, times, placements))]
    return new, TimestampTable(rows, num_frames=len(frames.frames))


def table_json(completion: str, table: TimestampTable) -> str:
    """The CLI's --json output: the new completion and the table."""
    return json.dumps({"completion": completion, **table.to_json()}, ensure_ascii=False, indent=2)


__all__ = ["DEFAULT_LAMBDA_SMOOTH", "TimestampRow", "TimestampTable", "add_timestamps", "table_json"]
