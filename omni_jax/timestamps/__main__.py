"""Add frame timestamps to one answer.

    python -m omni_jax.timestamps --video clip.mp4 --clip /ckpt/clip-vit-base-patch32 \
        --completion_file answer.txt [--interval 1.0] [--lambda_smooth 0.0] [--method dp|argmax] [--json]

Prints the new completion and a table (event, frame, time, similarity, margin to the runner-up),
or with --json one JSON object. Bad input prints a message and the completion unchanged (exit 0).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from omni_jax.weights.hf_load import WeightMismatchError
from omni_jax.timestamps.flags import Postprocessor
from omni_jax.timestamps.pipeline import DEFAULT_LAMBDA_SMOOTH, table_json


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m omni_jax.timestamps", description=__doc__.splitlines()[0])
    p.add_argument("--video", required=True, help="the video the answer is about")
    p.add_argument("--clip", required=True, help="HF CLIPModel directory (local or gs://)")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--completion", help="the model's answer text")
    text.add_argument("--completion_file", help="a file holding the answer text")
    p.add_argument("--interval", type=float, default=None,
                   help="seconds between frames (default: the frames the Thinker saw, recipe's data config)")
    p.add_argument("--max_frames", type=int, default=None, help="with the Thinker's frames: the data config's cap")
    p.add_argument("--lambda_smooth", type=float, default=DEFAULT_LAMBDA_SMOOTH, help="jump penalty per frame")
    p.add_argument("--method", choices=("dp", "argmax"), default="dp")
    p.add_argument("--dtype", default="float32", help="CLIP compute dtype")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.completion is not None:
        completion = args.completion
    else:
        path = pathlib.Path(args.completion_file)
        if not path.is_file():
            print(f"error: --completion_file {path} does not exist", file=sys.stderr)
            return 2
        completion = path.read_text(encoding="utf-8")
    data_cfg = None
    if args.max_frames is not None:
        from omni_jax.data.config import data_defaults

        data_cfg = data_defaults()
        data_cfg.max_frames = args.max_frames
    post = Postprocessor(args.clip, data_cfg=data_cfg, interval=args.interval, lambda_smooth=args.lambda_smooth,
                         method=args.method, dtype=args.dtype)
    try:
        post.clip  # noqa: B018 - load CLIP now, so a bad --clip is reported as such
    except (FileNotFoundError, WeightMismatchError, ValueError) as e:
        print(f"error: cannot load CLIP from --clip {args.clip}: {e}", file=sys.stderr)
        return 2
    new, table = post(completion, args.video)
    if args.json:
        print(table_json(new, table))
        return 0
    print(new)
    print()
    print(table.format() if table.rows else f"unchanged: {table.message}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
