"""Damaged checkpoints: every restored array is checked against the checksum saved with it, and a
run resumes from the newest step that restores and verifies; keep-N never deletes that step."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_jax.checkpoint import CheckpointStore, DamagedCheckpoint

META = {"hf_config": {"model_type": "test"}}


def _abstract(tree):
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), tree)


def _params(seed):
    rng = np.random.default_rng(seed)
    return {"embed": jnp.asarray(rng.standard_normal((64, 96)).astype(np.float32)),
            "norm": jnp.asarray(rng.standard_normal((96,)).astype(np.float32))}


def _save_steps(path, steps, keep=None):
    store = CheckpointStore(path, async_save=False, max_to_keep=keep)
    for s in steps:
        store.save(s, params=_params(s), meta=META, extra={"opt_state": {"mu": _params(s + 100)}, "data": {"k": s}})
    return store


def _largest_params_file(path, step):
    files = [f for f in (path / str(step) / "params").rglob("*") if f.is_file()]
    return max(files, key=lambda f: f.stat().st_size)


def _restore_newest(path):
    store = CheckpointStore(path, async_save=False)
    return store, store.restore_newest_good(params_abstract=_abstract(_params(0)),
                                            extra_abstract={"opt_state": _abstract({"mu": _params(0)})})


def test_flipped_bytes_are_detected_and_the_run_resumes_from_the_step_before(tmp_path, caplog):
    _save_steps(tmp_path, [1, 2]).close()
    target = _largest_params_file(tmp_path, 2)
    data = bytearray(target.read_bytes())
    size = len(data)
    start = size // 2 - 32
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])  # same size, 64 bytes flipped
    target.write_bytes(bytes(data))
    store = CheckpointStore(tmp_path, async_save=False)
    with pytest.raises(DamagedCheckpoint, match="step 2 of .* is damaged|step 2"):
        store.restore(2, params_abstract=_abstract(_params(0)))
    with caplog.at_level(logging.WARNING, logger="omni_jax.checkpoint.store"):
        store, out = _restore_newest(tmp_path)
    assert out.step == 1
    np.testing.assert_array_equal(np.asarray(out.params["embed"]), np.asarray(_params(1)["embed"]))
    assert "checkpoint step 2 of" in caplog.text and "cannot be used" in caplog.text
    assert store.all_steps() == [1] and (tmp_path / "2.damaged").is_dir()  # moved aside, not deleted
    store.save(2, params=_params(2), meta=META)  # the step number is free again
    store.close()


@pytest.mark.parametrize("damage", ["truncate", "delete", "meta"])
def test_a_truncated_or_missing_file_in_the_latest_step_falls_back(tmp_path, damage):
    _save_steps(tmp_path, [1, 2, 3]).close()
    if damage == "meta":
        (tmp_path / "3" / "meta" / "metadata").write_text('{"hf_conf')
    else:
        target = _largest_params_file(tmp_path, 3)
        if damage == "truncate":
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        else:
            target.unlink()
    store, out = _restore_newest(tmp_path)
    assert out.step == 2 and out.extra["data"] == {"k": 2}
    store.close()


def test_non_finite_values_do_not_restore(tmp_path):
    store = CheckpointStore(tmp_path, async_save=False)
    bad = _params(1)
    bad["norm"] = bad["norm"].at[3].set(jnp.nan)
    store.save(1, params=_params(1), meta=META)
    store.save(2, params=bad, meta=META)  # saved as it was: the checksum matches, the values are not usable
    with pytest.raises(DamagedCheckpoint, match=r"\['norm'\] holds NaN or infinite values"):
        store.restore(2, params_abstract=_abstract(_params(0)))
    out = store.restore_newest_good(params_abstract=_abstract(_params(0)))
    assert out.step == 1
    store.close()


def test_no_good_step_is_a_clear_error(tmp_path):
    _save_steps(tmp_path, [1, 2]).close()
    for s in (1, 2):
        _largest_params_file(tmp_path, s).unlink()
    with pytest.raises(DamagedCheckpoint, match="no step of .* restores and verifies: step 2: .*step 1: "):
        _restore_newest(tmp_path)


def test_keep_n_never_deletes_the_newest_verified_step(tmp_path):
    _save_steps(tmp_path, [1, 2], keep=2).close()
    store = CheckpointStore(tmp_path, async_save=False, max_to_keep=2)
    store.restore_newest_good(params_abstract=_abstract(_params(0)))  # step 2 verified
    for s in (3, 4, 5):
        store.save(s, params=_params(s), meta=META)
    assert store.all_steps() == [2, 4, 5]  # 2 stays until a newer step is known to be good
    store.close()
    store = CheckpointStore(tmp_path, async_save=False, max_to_keep=2)
    store.restore_newest_good(params_abstract=_abstract(_params(0)))  # now 5 is verified: 2 goes at the next save
    store.save(6, params=_params(6), meta=META)
    assert store.all_steps() == [5, 6]
    store.close()


def test_a_step_of_another_structure_is_refused_and_left_alone(tmp_path):
    store = CheckpointStore(tmp_path, async_save=False)
    store.save(1, params=_params(1), meta=META, extra={"opt_state": {"mu": _params(2)}})
    with pytest.raises(KeyError, match=r"step 1 of .* has no item \['reference'\]"):
        store.restore_newest_good(params_abstract=_abstract(_params(0)),
                                  extra_abstract={"reference": _abstract(_params(0))})
    assert store.all_steps() == [1]
    store.close()


def test_parameters_of_another_shape_are_a_mismatch_not_damage(tmp_path):
    store = CheckpointStore(tmp_path, async_save=False)
    store.save(1, params=_params(1), meta=META)
    other = {"embed": jnp.zeros((64, 32)), "norm": jnp.zeros((32,))}
    with pytest.raises(KeyError, match=r"holds parameters of another shape .*\['embed'\]: saved \(64, 96\), wanted \(64, 32\)"):
        store.restore_newest_good(params_abstract=_abstract(other))
    assert store.all_steps() == [1]
    store.close()


def test_keep_n_keeps_the_newest_finite_step_when_nan_weights_are_saved(tmp_path):
    store = CheckpointStore(tmp_path, async_save=False, max_to_keep=2)
    store.save(1, params=_params(1), meta=META)
    nan = jax.tree.map(lambda x: x * jnp.nan, _params(2))
    for s in (2, 3, 4):
        store.save(s, params=nan, meta=META)
    assert store.all_steps() == [1, 3, 4]
    store.close()
    store = CheckpointStore(tmp_path, async_save=False)
    assert store.restore_newest_good(params_abstract=_abstract(_params(0))).step == 1
    store.close()
