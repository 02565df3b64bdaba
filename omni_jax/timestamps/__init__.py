"""The frame-timestamp post-processor: `[Frame N: T.XXs]` after the key events of a `<think>`.

    from omni_jax.timestamps import ClipMatcher, add_timestamps
    clip = ClipMatcher.load("/ckpt/clip-vit-base-patch32")
    new_completion, table = add_timestamps(completion, "video.mp4", clip)

`python -m omni_jax.timestamps --video V --clip DIR --completion TEXT` does the same from a shell.
"""

from omni_jax.timestamps.encode import ClipMatcher
from omni_jax.timestamps.events import Event, endpoint_generate, prompt_events, rule_events
from omni_jax.timestamps.flags import Postprocessor
from omni_jax.timestamps.pipeline import DEFAULT_LAMBDA_SMOOTH, TimestampRow, TimestampTable, add_timestamps

__all__ = ["ClipMatcher", "DEFAULT_LAMBDA_SMOOTH", "Event", "Postprocessor", "TimestampRow", "TimestampTable",
           "add_timestamps", "endpoint_generate", "prompt_events", "rule_events"]
