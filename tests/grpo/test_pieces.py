"""A run's pieces: the abstract ones (what the fit check compiles) are the real ones without the memory."""

import os
import pathlib
import subprocess
import sys

# 4 CPU devices as a 2 × 2 (data, fsdp) mesh; full fine-tuning and LoRA.
SCRIPT = """
import jax
from jax.sharding import NamedSharding
from configs import default
from omni_jax import parallel
from omni_jax.aot.inputs import grpo_batch, with_shardings
from omni_jax.grpo.experience import row_shardings
from omni_jax.grpo.pieces import build_run
from omni_jax.grpo.step import jit_train_step
from omni_jax.tokenizer import load_tokenizer


def described(tree):
    out = []
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        assert isinstance(x.sharding, NamedSharding), (jax.tree_util.keystr(path), x.sharding)
        out.append((jax.tree_util.keystr(path).replace(".value", ""), x.shape, str(x.dtype),
                    x.sharding.spec, dict(x.sharding.mesh.shape)))
    return out


tokenizer = load_tokenizer("tiny")
for rank in (0, 4):
    config = default.get_config()
    with config.unlocked():
        config.mesh.data, config.mesh.fsdp = 2, 2
        config.lora.rank = rank
    real = build_run(config, tokenizer)
    abstract = build_run(config, tokenizer, devices=jax.devices(), abstract=True)
    assert real.layout.shape == abstract.layout.shape == {"data": 2, "fsdp": 2, "tp": 1}
    assert real.step_cfg == abstract.step_cfg and real.layout.rules == abstract.layout.rules == parallel.DEFAULT_RULES
    assert (real.lora_cfg is None) == (abstract.lora_cfg is None) == (rank == 0)
    for name in ("params", "opt_state", "step", "skipped"):
        want, got = described(getattr(real.state, name)), described(getattr(abstract.state, name))
        assert want == got, (rank, name, [w for w, g in zip(want, got) if w != g][:3], len(want), len(got))
    assert described(real.frozen) == described(abstract.frozen), rank
    # Something is sharded, or the comparison above would hold for any mesh.
    specs = [d[3] for d in described(real.state.params) + described(real.state.opt_state)]
    assert any(any(axis is not None for axis in spec) for spec in specs), rank
    assert real.graphdef == abstract.graphdef, rank
    # LoRA trains the adapters alone; full fine-tuning the text decoder and lm_head, no adapters.
    trained = [d[0] for d in described(real.state.params)]
    assert trained and all(("['lora']" in p) == bool(rank) for p in trained), (rank, trained[:3])
    assert all(p.startswith(("['model']", "['lm_head']")) for p in trained), trained[:3]

# The run's train step traces under its layout wherever it is called (the trainer calls it outside
# any `activate`): the model's activation constraints are in it, as in the fit check's compile.
config = default.get_config()
with config.unlocked():
    config.mesh.data, config.mesh.fsdp = 2, 2
pieces = build_run(config, tokenizer, devices=jax.devices(), abstract=True)
batch = grpo_batch(pieces.model.cfg, 8, 32, 16, with_reference=False, with_old_logp=False)
batch = with_shardings(batch, row_shardings(batch, pieces.layout))


def constraints(layout):
    step = jit_train_step(pieces.graphdef, pieces.step_cfg, pieces.optimizer, parallel.shardings_of(pieces.state),
                          layout)
    return str(step.trace(pieces.state, pieces.frozen, batch).jaxpr).count("sharding_constraint")


assert parallel.current_layout() is None
assert constraints(pieces.layout) > 0 and constraints(None) == 0, (constraints(pieces.layout), constraints(None))
print("ok")
"""


def test_abstract_pieces_have_the_real_shapes_dtypes_and_shardings():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = pathlib.Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-3000:]
