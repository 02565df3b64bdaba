"""Shared fixtures of the evaluation tests: a tiny two-step checkpoint store and a synthetic
IntentBench-shaped set of real mp4 files, each built once per session."""

import json
import pathlib
import shutil

import numpy as np
import pytest

QUESTIONS = 6


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A checkpoint store of the default config's tiny Thinker with two steps (0 and 1) holding
    different random weights and the default training config in their meta (tokenizer, prompts)."""
    import jax
    from flax import nnx

    from configs import default
    from omni_jax.checkpoint import CheckpointStore, thinker_meta
    from omni_jax.model import presets
    from omni_jax.model.thinker import Thinker
    from omni_jax.tokenizer import load_tokenizer

    config = default.get_config()
    cfg = presets.architecture_config("tiny", load_tokenizer("tiny"), layer_loop="unrolled")
    directory = tmp_path_factory.mktemp("tiny_run") / "checkpoints"
    store = CheckpointStore(directory, async_save=False)
    meta = thinker_meta(cfg)
    meta["config"] = config.to_json_best_effort()
    abstract = nnx.state(nnx.eval_shape(lambda: Thinker(cfg, rngs=nnx.Rngs(0))), nnx.Param).to_pure_dict()
    for step in (0, 1):
        # Random weights drawn directly (an eager Thinker init takes a minute on a busy 2-core
        # machine): norms near 1, everything else N(0, 0.08), so answers vary token by token.
        rng = np.random.default_rng(step)

        def draw(path, leaf):
            names = [str(getattr(k, "key", k)) for k in path]
            is_norm = any("norm" in n or n.startswith("ln_") for n in names)
            base = 1.0 if is_norm and names[-1] == "weight" else 0.0
            return (base + (0.1 if is_norm else 0.08) * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

        store.save(step, params=jax.tree_util.tree_map_with_path(draw, abstract), meta=meta)
    store.close()
    return directory


@pytest.fixture(scope="session")
def bench_root(tmp_path_factory):
    """ROOT/IntentBench/qa.json + videos/*.mp4: QUESTIONS held-out synthetic questions (pristine;
    tests that damage files copy it first, see `bench_copy`)."""
    from omni_jax.eval import synthetic_bench

    root = tmp_path_factory.mktemp("bench")
    synthetic_bench.write_bench(root, QUESTIONS)
    return root


@pytest.fixture
def bench_copy(bench_root, tmp_path):
    root = tmp_path / "bench"
    shutil.copytree(bench_root, root)
    return root


def qa_rows(root) -> list[dict]:
    return json.loads((pathlib.Path(root) / "IntentBench" / "qa.json").read_text())


def write_rows(root, rows) -> None:
    (pathlib.Path(root) / "IntentBench" / "qa.json").write_text(json.dumps(rows))
