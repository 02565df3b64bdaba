"""`python -m omni_jax.train [--config configs/X.py[:variant]] [--workdir W] [--config.field=value ...]`

GRPO training, the product's main job. With no arguments it runs the embedded default
(configs/default.py: a tiny Thinker on synthetic video questions, on CPU). A workdir that holds
a checkpoint resumes by itself. Exit status: 0 finished, 75 stopped by SIGTERM after saving (run the
same command again to continue), 1 an error. On a Cloud TPU slice every worker runs the same command
(launch/ does this); JAX's distributed runtime is initialised here.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import flags
from ml_collections import config_flags

from omni_jax import config_utils, parallel
from omni_jax.grpo.guards import PREEMPTED_EXIT_CODE, Preemption
from omni_jax.grpo.trainer import run

ROOT = pathlib.Path(__file__).resolve().parents[1]
# configs/default.py of a checkout (or an editable install); an installed package carries it as
# omni_jax/configs/default.py.
DEFAULT_CONFIG = next((p for p in (ROOT / "configs" / "default.py", pathlib.Path(__file__).with_name("configs") /
                                   "default.py") if p.exists()), ROOT / "configs" / "default.py")

if __name__ == "__main__":  # first: DEFINE_config_file below applies --config.* overrides as it is defined
    from omni_jax import cli

    cli.exit_on_bad_args(sys.argv, prog="omni_jax.train", default_config=str(DEFAULT_CONFIG))


config_flags.DEFINE_config_file("config", str(DEFAULT_CONFIG), "Training config file[:variant].", lock_config=True)
flags.DEFINE_string("workdir", "workdir/default", "Where checkpoints, metrics.jsonl, TensorBoard files and PNGs go.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs off TPU).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs off TPU).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs off TPU).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    Preemption.install()  # SIGTERM from here on saves and exits 75 (see omni_jax.grpo.guards)
    cli.console_logging()
    config_utils.apply_cpu_devices(FLAGS.config)  # before JAX starts any backend
    parallel.init_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    summary = run(FLAGS.config, FLAGS.workdir)
    import jax

    if jax.process_index() == 0:
        print(json.dumps({"workdir": FLAGS.workdir, **summary}))
    if summary.get("preempted"):
        sys.exit(PREEMPTED_EXIT_CODE)  # saved: the same command resumes (0 would read as finished)


if __name__ == "__main__":
    cli.run(main, prog="omni_jax.train", default_config=str(DEFAULT_CONFIG))
