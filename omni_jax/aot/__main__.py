"""`python -m omni_jax.aot --config configs/X.py[:variant] --topology v5p-8 [--json] [--config.field=value ...]`

Will the run fit the TPU slice? Compiles, deviceless on this machine (libtpu needed, no TPU), the
rollout's prefill and decode, the GRPO train step and the reference pass of the config's model at
its worst-case batch for `--topology`, and prints HBM per chip by kind against the chip's
capacity, FLOPs and a roofline time per step. Exit status 0 when every step fits, 1 when one does
not, 2 when the check cannot run (no libtpu, a config invalid for the slice).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile-only: never take (or wait for) a local accelerator

from absl import app, flags
from ml_collections import config_flags

from omni_jax.aot import inputs as inputs_lib
from omni_jax.aot import report as report_lib
from omni_jax.aot.fit import STEPS, check_fit
from omni_jax.aot.topology import SLICES
from omni_jax.chips import GIB

config_flags.DEFINE_config_file("config", None, "Training config file[:variant].", lock_config=True)
flags.DEFINE_enum("topology", None, sorted(SLICES), "TPU slice to compile for (accelerator type).")
flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
flags.DEFINE_list("steps", list(STEPS), f"Steps to compile, a subset of {','.join(STEPS)}.")
flags.DEFINE_float("hbm_gib", None, "Pretend the chip has this much HBM (GiB) instead of its real capacity.")
flags.DEFINE_string("video_size", "1080x1440", "Source video frame HxW of the worst-case prompt (resized by the "
                    "data config's caps).")
flags.DEFINE_float("audio_seconds", 60.0, "Seconds of audio in the worst-case prompt.")
flags.DEFINE_integer("text_tokens", 400, "Text tokens (template, question, options) in the worst-case prompt.")
flags.mark_flags_as_required(["config", "topology"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    unknown = set(FLAGS.steps) - set(STEPS)
    if unknown:
        raise app.UsageError(f"--steps: unknown {sorted(unknown)}; choose from {','.join(STEPS)}")
    h, _, w = FLAGS.video_size.partition("x")
    prompt = inputs_lib.worst_case_prompt(FLAGS.config.data, source_hw=(int(h), int(w)),
                                          audio_seconds=FLAGS.audio_seconds, text_tokens=FLAGS.text_tokens)
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        result = check_fit(FLAGS.config, FLAGS.topology, prompt=prompt, steps=FLAGS.steps,
                           hbm_bytes=int(FLAGS.hbm_gib * GIB) if FLAGS.hbm_gib else None, progress=progress)
    except (RuntimeError, ValueError) as e:  # no libtpu, an invalid config for this slice, a prompt too long
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report_lib.to_json(result) if FLAGS.json else report_lib.to_text(result))
    return 0 if result.fits else 1


if __name__ == "__main__":
    from omni_jax import cli

    cli.run(main, prog="omni_jax.aot")
