"""`python -m omni_jax.convert hf2jax|jax2hf ...`: thin CLI over hf_to_orbax / orbax_to_hf.

    python -m omni_jax.convert hf2jax --hf_dir /ckpt/Qwen2.5-Omni-7B --out gs://bucket/omni7b [--dtype bfloat16]
    python -m omni_jax.convert jax2hf --ckpt /runs/grpo1 [--step 1200] --out /export/grpo1 \\
        [--base_hf_dir /ckpt/Qwen2.5-Omni-7B] [--dtype bfloat16] [--adapter_only]
    python -m omni_jax.convert hf2jax --hf_dir /ckpt/HumanOmniV2 --adapter /peft/adapter --out /ckpt/with_adapter
"""

from __future__ import annotations

import argparse
import sys

import jax

from omni_jax import parallel
from omni_jax.convert.hf_to_orbax import hf_to_orbax
from omni_jax.convert.orbax_to_hf import orbax_to_hf
from omni_jax.weights.hf_load import WeightMismatchError

DTYPES = ("bfloat16", "float32")


def _layout_arg(text: str) -> parallel.Layout | None:
    """--mesh 'auto' | 'none' | 'data=1,fsdp=-1,tp=1' → a Layout of that mesh and the default rules, or None."""
    if text == "none" or (text == "auto" and jax.default_backend() == "cpu"):
        return None
    if text == "auto":
        return parallel.Layout(parallel.make_mesh({"fsdp": -1}))
    try:
        shape = {k: int(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise SystemExit(f"error: --mesh {text!r}: expected auto, none or e.g. data=1,fsdp=-1,tp=1")
    return parallel.Layout(parallel.make_mesh(shape))


def _size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    for unit, factor in units.items():
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m omni_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    h = sub.add_parser("hf2jax", help="HF safetensors → omni_jax Orbax checkpoint (step 0)")
    h.add_argument("--hf_dir", required=True, help="local HF directory (config.json + *.safetensors)")
    h.add_argument("--out", required=True, help="output checkpoint directory, local or gs://")
    h.add_argument("--dtype", choices=DTYPES, default=None, help="storage dtype (default: the checkpoint's own)")
    h.add_argument("--mesh", default="auto",
                   help="auto (accelerators: all devices as fsdp; CPU: stream from host), none, or "
                        "data=1,fsdp=-1,tp=1 to place parameters on that mesh before writing")
    h.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() first (multi-host)")
    h.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    h.add_argument("--adapter", default=None,
                   help="a PEFT LoRA adapter directory to put onto the base (the result trains or evaluates with it)")

    j = sub.add_parser("jax2hf", help="omni_jax Orbax checkpoint step → HF safetensors directory")
    j.add_argument("--ckpt", required=True, help="checkpoint store (conversion output or training run), local or gs://")
    j.add_argument("--step", type=int, default=None, help="step to export (default: latest)")
    j.add_argument("--out", required=True, help="output HF directory (local)")
    j.add_argument("--base_hf_dir", default=None,
                   help="HF directory to take tokenizer/processor files from; a full Qwen2.5-Omni also gives "
                        "its talker/token2wav tensors and config.json")
    j.add_argument("--dtype", choices=DTYPES, default=None, help="thinker tensor dtype (default: as stored)")
    j.add_argument("--max_shard_size", type=_size, default="5GB", help="largest safetensors shard (default 5GB)")
    j.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    j.add_argument("--adapter_only", action="store_true",
                   help="a LoRA run: write its adapters as a PEFT adapter directory (adapter_config.json + "
                        "adapter_model.safetensors) instead of the merged model")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    try:
        if args.command == "hf2jax":
            if args.distributed:
                jax.distributed.initialize()
            hf_to_orbax(args.hf_dir, args.out, dtype=args.dtype, layout=_layout_arg(args.mesh),
                        overwrite=args.overwrite, adapter=args.adapter)
            print(f"wrote {args.out} (step 0)")
        else:
            summary = orbax_to_hf(args.ckpt, args.out, step=args.step, base_hf_dir=args.base_hf_dir, dtype=args.dtype,
                                  overwrite=args.overwrite, max_shard_bytes=args.max_shard_size,
                                  adapter_only=args.adapter_only)
            kind = "PEFT adapter" if summary.get("adapter_only") else \
                "full Qwen2.5-Omni" if summary["full_model"] else "thinker"
            rest = summary.get("not_exported")
            print(f"wrote {summary['out']}: {kind} of step {summary['step']}, {summary['tensors']} tensors"
                  + (f" (training state left in the checkpoint: {', '.join(rest)})" if rest else ""))
    except (FileExistsError, FileNotFoundError, WeightMismatchError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
