"""`python -m omni_jax.sft --config configs/sft_lora.py[:variant] [--workdir W] [--config.field=value ...]`

Supervised fine-tuning (full, or LoRA with `lora.rank` > 0) on HumanOmniV2-format rows whose
`solution` (or `response`) is the target completion. A workdir holding a checkpoint resumes.
Exit status: 0 finished, 75 stopped by SIGTERM after saving (the same command continues), 1 an error.
Export the result with `python -m omni_jax.convert jax2hf` (merged, or `--adapter_only`).
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import flags
from ml_collections import config_flags

from omni_jax import cli, config_utils, parallel
from omni_jax.grpo.guards import PREEMPTED_EXIT_CODE
from omni_jax.sft import run

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = str(ROOT / "configs" / "sft_lora.py") + ":tiny"

if __name__ == "__main__":  # first: DEFINE_config_file below applies --config.* overrides as it is defined
    cli.exit_on_bad_args(sys.argv, prog="omni_jax.sft", default_config=DEFAULT_CONFIG)

config_flags.DEFINE_config_file("config", DEFAULT_CONFIG,
                                "SFT config file[:variant].", lock_config=True)
flags.DEFINE_string("workdir", "workdir/sft", "Where checkpoints, metrics.jsonl, TensorBoard files and PNGs go.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs off TPU).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs off TPU).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs off TPU).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cli.console_logging()
    config_utils.apply_cpu_devices(FLAGS.config)  # before JAX starts any backend
    parallel.init_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    import jax

    summary = run(FLAGS.config, FLAGS.workdir)
    if jax.process_index() == 0:
        print(json.dumps({"workdir": FLAGS.workdir, **summary}))
    if summary.get("preempted"):
        sys.exit(PREEMPTED_EXIT_CODE)  # saved: the same command resumes (0 would read as finished)


if __name__ == "__main__":
    cli.run(main, prog="omni_jax.sft", default_config=DEFAULT_CONFIG)
