"""The `--timestamps` flags for entry points that generate answers (infer, eval), in one place.

    add_arguments(parser)                      # --timestamps --clip DIR [--timestamps_interval S] ...
    post = from_args(args, data_cfg)           # None unless --timestamps
    new_completion, table = post(completion, video_path)

`data_cfg` is the data config the answers were generated under, so the frames matched are the
ones the Thinker saw. CLIP is loaded on the first call and kept.
"""

from __future__ import annotations

import argparse

from omni_jax.timestamps.pipeline import DEFAULT_LAMBDA_SMOOTH, TimestampTable, add_timestamps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("frame timestamps (CLIP post-processor)")
    g.add_argument("--timestamps", action="store_true", help="add [Frame N: T.XXs] after the key events of <think>")
    g.add_argument("--clip", default=None, help="HF CLIPModel directory, local or gs:// (needed with --timestamps)")
    g.add_argument("--timestamps_interval", type=float, default=None,
                   help="seconds between matched frames (default: the frames the Thinker saw)")
    g.add_argument("--lambda_smooth", type=float, default=DEFAULT_LAMBDA_SMOOTH, help="jump penalty per frame")
    g.add_argument("--timestamps_method", choices=("dp", "argmax"), default="dp")
    g.add_argument("--clip_dtype", default="float32", help="CLIP compute dtype")


class Postprocessor:
    """`post(completion, video) -> (new_completion, TimestampTable)` with fixed settings."""

    def __init__(self, clip_dir, *, data_cfg=None, interval: float | None = None,
                 lambda_smooth: float = DEFAULT_LAMBDA_SMOOTH, method: str = "dp", dtype: str = "float32",
                 extractor=None):
        self.clip_dir, self.data_cfg, self.interval = clip_dir, data_cfg, interval
        self.lambda_smooth, self.method, self.dtype, self.extractor = lambda_smooth, method, dtype, extractor
        self._clip = None

    @property
    def clip(self):
        if self._clip is None:
            from omni_jax.timestamps.encode import ClipMatcher  # loads JAX and the weights on first use

            self._clip = ClipMatcher.load(self.clip_dir, dtype=self.dtype)
        return self._clip

    def __call__(self, completion: str, video) -> tuple[str, TimestampTable]:
        return add_timestamps(completion, video, self.clip, interval=self.interval, data_cfg=self.data_cfg,
                              lambda_smooth=self.lambda_smooth, method=self.method, extractor=self.extractor)


def from_args(args: argparse.Namespace, data_cfg=None) -> Postprocessor | None:
    """The post-processor the flags ask for, or None without --timestamps. Raises for --timestamps
    without --clip."""
    if not args.timestamps:
        return None
    if not args.clip:
        raise ValueError("--timestamps needs --clip DIR: a Hugging Face CLIPModel directory (local or gs://)")
    return Postprocessor(args.clip, data_cfg=data_cfg, interval=args.timestamps_interval,
                         lambda_smooth=args.lambda_smooth, method=args.timestamps_method, dtype=args.clip_dtype)
