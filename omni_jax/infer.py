"""`python -m omni_jax.infer --ckpt PATH --video clip.mp4 --question "..." [--options "A. x" "B. y"]`

Answer one question with a checkpoint (an omni_jax checkpoint, any step, or an HF directory):
prints the completion, its <context> / <think> / <answer> blocks, the reward components when
`--solution` is given, and tokens/s; `--json` prints one JSON object instead. Greedy by default,
2,048 new tokens at most (HumanOmniV2's evaluation). `--messages file.json` takes qwen-omni
messages instead of --video/--question.
"""

from __future__ import annotations

import argparse
import json
import sys

from omni_jax.timestamps import flags as timestamp_flags


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m omni_jax.infer", description=__doc__.split("\n\n")[1])
    ap.add_argument("--ckpt", required=True, help="[NAME=]PATH[@STEP]: omni_jax checkpoint (latest step unless "
                    "@STEP or --step) or HF directory")
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--tokenizer", default=None, help="tokenizer directory or 'tiny' (default: the checkpoint's)")
    ap.add_argument("--video", default=None, help="video file (local or gs://); its own audio track is used")
    ap.add_argument("--image", default=None, help="image file (local or gs://)")
    ap.add_argument("--audio", default=None, help="a separate audio file (instead of the video's track)")
    ap.add_argument("--no_video_audio", action="store_true", help="do not give the model the video's audio track")
    ap.add_argument("--question", default=None)
    ap.add_argument("--options", nargs="+", default=None, help='e.g. "A. happy" "B. sad"')
    ap.add_argument("--problem_type", default=None,
                    help="multiple choice | numerical | free-form | OCR | regression | emer_ov_mc | judge "
                         "(default: multiple choice with --options, else free-form)")
    ap.add_argument("--messages", default=None, help="a JSON file of qwen-omni messages (instead of --question)")
    ap.add_argument("--solution", default=None, help="the reference answer ('B' or '<answer>B</answer>'): prints "
                    "the reward components")
    ap.add_argument("--max_new_tokens", type=int, default=2048)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ap.add_argument("--top_k", type=int, default=0)
    ap.add_argument("--top_p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--mesh", default="auto", help="auto | none | data=1,fsdp=-1,tp=1")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    timestamp_flags.add_arguments(ap)
    return ap


def format_text(result: dict) -> str:
    lines = [f"checkpoint: {result['checkpoint']}", "", "completion:", result["completion"], ""]
    for name in ("context", "think", "answer"):
        value = result.get(name)
        lines.append(f"<{name}>: {value if value is not None else '(missing)'}")
    if "rewards" in result:
        lines.append("")
        lines.append("rewards: " + ", ".join(f"{k} {v:.3f}" for k, v in result["rewards"].items()))
    lines.append("")
    lines.append(f"{result['prompt_tokens']} prompt tokens, {result['completion_tokens']} generated in "
                 f"{result['seconds']:.2f} s: {result['tokens_per_s']:.1f} tokens/s (compilation included)")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.messages is None and (args.question is None or (args.video is None and args.image is None)):
        raise SystemExit("error: give --question with --video or --image, or --messages FILE")
    if args.timestamps and (not args.clip or args.video is None):
        raise SystemExit("error: --timestamps needs --clip DIR (a HF CLIPModel directory) and --video")
    from omni_jax.eval import checkpoints, inference

    layout = checkpoints.layout_from_arg(args.mesh)
    loaded = checkpoints.open_checkpoint(args.ckpt, step=args.step, tokenizer=args.tokenizer, dtype=args.dtype,
                                         layout=layout, progress=not args.json)
    if args.messages:
        messages = inference.load_messages(args.messages)
    else:
        messages = inference.question_messages(
            loaded.data_cfg, args.question, video=args.video, image=args.image, audio=args.audio,
            options=args.options, problem_type=args.problem_type, video_audio=not args.no_video_audio)
    problem_type = args.problem_type or ("multiple choice" if args.options else "free-form")
    result = inference.answer(loaded, messages, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=args.seed, solution=args.solution,
                              problem_type=problem_type, layout=layout)
    table = None
    post = timestamp_flags.from_args(args, loaded.data_cfg)
    if post is not None:  # [Frame N: T.XXs] marks in <think>, matched on the frames the model saw
        completion, table = post(result["completion"], inference.read_media(args.video))
        result.update(completion=completion, **inference.parse_blocks(completion), timestamps=table.to_json())
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(format_text(result))
        if table is not None:
            print("\ntimestamps:\n" + (table.format() if table.rows else f"unchanged: {table.message}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
