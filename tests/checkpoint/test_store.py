"""CheckpointStore: items round-trip, keep-N, streamed / lazily read leaves, atomic steps."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from omni_jax.checkpoint import CheckpointStore, StreamedArray, is_checkpoint, locate, streaming

META = {"hf_config": {"model_type": "test"}}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _one_device():
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _abstract(tree, dtype=None):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype or x.dtype, sharding=_one_device()), tree)


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"model": {"layers": {"mlp": {"up_proj": {"kernel": rng.standard_normal((3, 4, 6)).astype(np.float32)}}},
                      "embed_tokens": {"embedding": rng.standard_normal((10, 4)).astype(np.float32)}}}


def test_params_meta_and_extra_items_round_trip(tmp_path):
    params = jax.tree.map(jnp.asarray, _params())
    opt = {"mu": jax.tree.map(lambda x: x * 2, params), "count": jnp.int32(7)}
    rng = jax.random.key(42)
    data = {"shard": 3, "position": [5, 17], "epoch": 0}
    with CheckpointStore(tmp_path, async_save=True) as store:
        store.save(10, params=params, meta={**META, "note": "hi"}, extra={"opt_state": opt, "rng": rng, "data": data})
        store.wait()
        assert store.latest_step() == 10
    store = CheckpointStore(tmp_path, read_only=True)
    out = store.restore(params_abstract=_abstract(params),
                        extra_abstract={"opt_state": _abstract(opt), "rng": _abstract(rng)})
    assert out.step == 10
    for got, want in zip(jax.tree.leaves(out.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for got, want in zip(jax.tree.leaves(out.extra["opt_state"]), jax.tree.leaves(opt)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert jnp.issubdtype(out.extra["rng"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(out.extra["rng"]), jax.random.key_data(rng))
    # The same key draws the same numbers after restore.
    assert float(jax.random.uniform(out.extra["rng"])) == float(jax.random.uniform(rng))
    assert out.extra["data"] == data
    assert out.meta["note"] == "hi" and out.meta["hf_config"] == META["hf_config"]
    assert out.meta["items"] == {"opt_state": "pytree", "rng": "pytree", "data": "json"}
    assert out.meta["step"] == 10 and "omni_jax_version" in out.meta and "saved_at" in out.meta


def test_a_relative_directory_saves_and_restores(tmp_path, monkeypatch):
    # `python -m omni_jax.train` defaults to workdir/default: Orbax itself refuses relative paths.
    monkeypatch.chdir(tmp_path)
    params = jax.tree.map(jnp.asarray, _params())
    with CheckpointStore("run/checkpoints", async_save=True) as store:
        store.save(3, params=params, meta=META, extra={"opt_state": {"count": jnp.int32(1)}})
        store.wait()
    assert (tmp_path / "run" / "checkpoints" / "3").is_dir()
    out = CheckpointStore("run/checkpoints", read_only=True).restore(params_abstract=_abstract(params))
    assert out.step == 3
    for got, want in zip(jax.tree.leaves(out.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_restore_casts_to_the_abstract_dtype(tmp_path):
    params = _params()
    with CheckpointStore(tmp_path, async_save=False) as store:
        store.save(0, params=params, meta=META)
    out = CheckpointStore(tmp_path, read_only=True).restore(params_abstract=_abstract(params, jnp.bfloat16)).params
    got = out["model"]["layers"]["mlp"]["up_proj"]["kernel"]
    assert got.dtype == jnp.bfloat16
    want = params["model"]["layers"]["mlp"]["up_proj"]["kernel"].astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_keep_n_and_step_selection(tmp_path):
    with CheckpointStore(tmp_path, max_to_keep=2) as store:
        for step in (1, 2, 3):
            store.save(step, params=_params(step), meta=META)
        store.wait()
        assert store.all_steps() == [2, 3]
    store = CheckpointStore(tmp_path, read_only=True)
    for step in (2, 3):
        got = store.restore(step, params_abstract=_abstract(_params())).params
        np.testing.assert_array_equal(np.asarray(got["model"]["embed_tokens"]["embedding"]),
                                      _params(step)["model"]["embed_tokens"]["embedding"])
    with pytest.raises(FileNotFoundError, match=r"step 1 is not in .* committed steps: \[2, 3\]"):
        store.restore(1, params_abstract=_abstract(_params()))
    assert locate(tmp_path / "3") == (tmp_path, 3)
    assert is_checkpoint(tmp_path) and is_checkpoint(tmp_path / "3")


def test_streamed_layers_are_written_and_read_one_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 1)  # tiny test arrays: one chunk per block
    full = np.random.default_rng(1).standard_normal((5, 3, 4)).astype(ml_dtypes.bfloat16)
    calls = []

    def read(index):
        calls.append(index)
        return full[index]

    params = {"model": {"layers": {"mlp": {"up_proj": {"kernel": StreamedArray(full.shape, full.dtype, read, layers=True)}}}}}
    with CheckpointStore(tmp_path, async_save=False) as store:
        store.save(0, params=params, meta=META)
    assert calls == [(slice(i, i + 1), slice(0, 3), slice(0, 4)) for i in range(5)]
    store = CheckpointStore(tmp_path, read_only=True)
    handle = store.open_params()["model"]["layers"]["mlp"]["up_proj"]["kernel"]
    assert tuple(handle.shape) == full.shape
    assert tuple(handle.chunk_layout.read_chunk.shape) == (1, 3, 4)
    for i in range(5):
        np.testing.assert_array_equal(handle[i].read().result(), full[i])
    # Any Orbax reader restores it as an ordinary array.
    got = store.restore(params_abstract={"model": {"layers": {"mlp": {"up_proj": {"kernel": jax.ShapeDtypeStruct(
        full.shape, jnp.float32, sharding=_one_device())}}}}}).params
    np.testing.assert_array_equal(np.asarray(got["model"]["layers"]["mlp"]["up_proj"]["kernel"]), full.astype(np.float32))


def test_large_streamed_matrices_are_written_in_whole_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 200)
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 1)
    full = np.arange(40 * 6, dtype=np.float32).reshape(6, 40)  # the long axis is the one split
    calls = []

    def read(index):
        calls.append(index)
        return full[index]

    with CheckpointStore(tmp_path, async_save=False) as store:
        store.save(0, params={"lm_head": {"kernel": StreamedArray(full.shape, full.dtype, read)}}, meta=META)
    handle = CheckpointStore(tmp_path, read_only=True).open_params()["lm_head"]["kernel"]
    chunk = tuple(handle.chunk_layout.read_chunk.shape)
    assert chunk[0] == 6 and chunk[1] < 40 and 6 * chunk[1] * 4 <= 200
    assert len(calls) == 40 // chunk[1]
    for index in calls:  # every read is one whole chunk column
        assert index[0] == slice(0, 6) and index[1].stop - index[1].start == chunk[1] and index[1].start % chunk[1] == 0
    np.testing.assert_array_equal(handle.read().result(), full)


def test_bad_calls_are_explained(tmp_path):
    store = CheckpointStore(tmp_path, async_save=False)
    with pytest.raises(ValueError, match="hf_config"):
        store.save(0, params=_params(), meta={})
    with pytest.raises(ValueError, match="extra item name 'params'"):
        store.save(0, params=_params(), meta=META, extra={"params": {"a": 1}})
    with pytest.raises(TypeError, match="'data'.*not JSON-serialisable"):
        store.save(0, params=_params(), meta=META, extra={"data": {"when": object()}})
    with pytest.raises(FileNotFoundError, match="no complete checkpoint step"):
        store.restore(params_abstract=_abstract(_params()))
    store.save(0, params=_params(), meta=META)
    with pytest.raises(ValueError, match="has no sharding"):
        store.restore(params_abstract=jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _params()))
    store.close()


WRITER = r"""
import sys, time
import numpy as np
from omni_jax.checkpoint import CheckpointStore, StreamedArray
store = CheckpointStore(sys.argv[1], async_save=False)
store.save(1, params={"w": np.arange(8.0)}, meta={"hf_config": {}})
from omni_jax.checkpoint import streaming
streaming.BLOCK_BYTES = 1
def slow(index):
    print("writing", flush=True)
    time.sleep(0.5)
    return np.zeros((index[0].stop - index[0].start, 4), np.float32)
store.save(2, params={"w": StreamedArray((20, 4), np.float32, slow, layers=True)}, meta={"hf_config": {}})
print("finished", flush=True)
"""


def test_a_killed_save_never_appears_as_a_step(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    try:
        for line in proc.stdout:
            if line.strip() == "writing":
                break
        time.sleep(0.7)  # a block or two into step 2
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("2")]
    assert leftovers and all("tmp" in name for name in leftovers), leftovers
    store = CheckpointStore(tmp_path)
    assert store.all_steps() == [1]
    got = store.restore(params_abstract={"w": jax.ShapeDtypeStruct((8,), jnp.float32, sharding=_one_device())})
    assert got.step == 1
    np.testing.assert_array_equal(np.asarray(got.params["w"]), np.arange(8.0))
    # A resumed run saves the same step again over the leftover.
    store.save(2, params={"w": np.ones(3, np.float32)}, meta=META)
    store.wait()
    assert store.all_steps() == [1, 2]
    assert json.loads((tmp_path / "2" / "meta" / "metadata").read_text())["step"] == 2
