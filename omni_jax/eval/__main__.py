"""`python -m omni_jax.eval --ckpt A [--ckpt B ...] --bench intentbench,daily_omni,worldsense --data_dir ROOT --out DIR`

Evaluate checkpoints on HumanOmniV2's benchmarks with HumanOmniV2's evaluation prompts, greedy,
2,048 new tokens: batched and split over every device, resumable, with the instruction-following
probe and the people-focus measures. Writes DIR/<bench>_<checkpoint>.jsonl (per question, as
they finish), DIR/<bench>_<checkpoint>.json (HumanOmniV2's shape), DIR/report.md (checkpoints
side by side with differences and 95 % intervals), DIR/summary.json and PNG charts. With
`--timestamps --clip DIR` every answer gets `[Frame N: T.XXs]` marks in its <think> before it is
scored (the model's own answer stays in each row's `output_raw`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from omni_jax.timestamps import flags as timestamp_flags


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m omni_jax.eval", description=__doc__.split("\n\n")[1])
    ap.add_argument("--ckpt", action="append", required=True,
                    help="[NAME=]PATH[@STEP]: an omni_jax checkpoint (latest step unless @STEP) or an HF directory; "
                         "repeat for several (the first is the baseline of the differences)")
    ap.add_argument("--bench", default="intentbench", help="comma list of intentbench, daily_omni, worldsense")
    ap.add_argument("--data_dir", required=True, help="ROOT with IntentBench/, Daily-Omni/, WorldSense/ "
                    "(HumanOmniV2's layout; local or gs://), or a TFDS data_dir with omni_intentbench")
    ap.add_argument("--out", required=True, help="output directory (local or gs://)")
    ap.add_argument("--limit", type=int, default=None, help="evaluate the first N questions of each benchmark")
    ap.add_argument("--batch_size", type=int, default=8, help="questions per generate call (rounded up to a "
                    "multiple of the devices the batch is split over)")
    ap.add_argument("--max_new_tokens", type=int, default=2048)
    ap.add_argument("--probe", type=int, default=10, help="questions per probe instruction (0: no probe)")
    ap.add_argument("--probe_seed", type=int, default=0)
    ap.add_argument("--tokenizer", default=None, help="tokenizer directory or 'tiny' (default: the checkpoint's)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--mesh", default="auto", help="auto | none | data=1,fsdp=-1,tp=1")
    ap.add_argument("--max_frames", type=int, default=None, help="override the frame cap (HumanOmniV2's eval "
                    "used qwen-omni-utils' defaults: 768)")
    ap.add_argument("--max_pixels", type=int, default=None, help="override the per-frame pixel cap")
    ap.add_argument("--judge_endpoint", default=None, help="rate every <think> 0-10 with this OpenAI-compatible "
                    "chat-completions endpoint (the training judge's settings otherwise)")
    ap.add_argument("--judge_model", default=None)
    timestamp_flags.add_arguments(ap)
    ap.add_argument("--cpu_devices", type=int, default=0, help="run the CPU backend as this many devices")
    ap.add_argument("--coordinator_address", default=None, help="host:port of process 0 (multi-process off TPU)")
    ap.add_argument("--num_processes", type=int, default=None)
    ap.add_argument("--process_id", type=int, default=None)
    return ap


def _init_jax(args) -> None:
    import jax

    if args.cpu_devices:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    if args.coordinator_address:
        if os.environ.get("JAX_PLATFORMS", "") in ("", "cpu"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    elif os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID") is not None:
        jax.distributed.initialize()  # Cloud TPU VM: everything comes from the environment


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.timestamps and not args.clip:
        raise SystemExit("error: --timestamps needs --clip DIR (a Hugging Face CLIPModel directory, local or gs://)")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax logs every read-only open at WARNING
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _init_jax(args)
    import jax

    from omni_jax.eval import checkpoints, datasets, suite

    judge = None
    if args.judge_endpoint:
        from omni_jax.rewards.config import judge_defaults
        from omni_jax.rewards.judge import Judge

        cfg = judge_defaults()
        cfg.enabled, cfg.endpoint = True, args.judge_endpoint
        if args.judge_model:
            cfg.model = args.judge_model
        judge = Judge(cfg)
    overrides = {k: getattr(args, k) for k in ("max_frames", "max_pixels") if getattr(args, k) is not None}
    options = suite.SuiteOptions(limit=args.limit, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                 probe_per_instruction=args.probe, probe_seed=args.probe_seed,
                                 tokenizer=args.tokenizer, dtype=args.dtype, data_overrides=overrides)
    path = suite.run_suite(args.ckpt, datasets.bench_names(args.bench), data_dir=args.data_dir, out_dir=args.out,
                           options=options, layout=checkpoints.layout_from_arg(args.mesh), judge=judge,
                           timestamps=(lambda data_cfg: timestamp_flags.from_args(args, data_cfg))
                           if args.timestamps else None)
    if jax.process_index() == 0:
        print(open(path, encoding="utf-8").read() if "://" not in str(path) else path.read_text())
        print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
