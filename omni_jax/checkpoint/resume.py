"""A training run's state in the store: one save, one resume, and the warm-start's partial save.

A training step holds `params` (every parameter of the model as a pure dict, what conversion and
export read) and the extra items `opt_state`, `counters` ({"step", "skipped"}: optimizer steps
taken and updates skipped), `data` (the data stream's position, JSON) and what a loop adds by
name (GRPO's frozen `reference`, SFT's `sft_counts`); `save_train_state` writes one and
`restore_train_state` reads the newest good one back. Trees in, trees out: the restore targets
are the live trees of the run being resumed (their shapes, dtypes and shardings); nothing here
knows the model or the train step.

Resuming is the newest good step, or a clear word on why the workdir does not fit: `restore_run`
wraps `CheckpointStore.restore_newest_good` for the training loop: damaged steps are skipped (see
store.py), and a step saved under another configuration (e.g. grpo.beta 0 -> 0.04 adds a
reference copy to the checkpoint) is refused with the config fields that differ and what to do,
instead of a raw KeyError from deep inside the restore. `save_warmstart` / `restore_warmstart`
keep a warm-start interrupted by SIGTERM, so the next run continues it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import jax
from flax import nnx

from omni_jax.checkpoint.store import CheckpointStore, Restored, absolute
from omni_jax.checkpoint.verify import CheckpointMismatch

log = logging.getLogger(__name__)


def config_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """'a.b: old -> new' for every leaf that differs between two nested JSON dicts."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved:
                out.append(f"{name}: (absent) -> {current[key]!r}")
            elif key not in current:
                out.append(f"{name}: {saved[key]!r} -> (absent)")
            else:
                out.extend(config_differences(saved[key], current[key], name))
        return out
    return [] if saved == current else [f"{prefix}: {saved!r} -> {current!r}"]


def _as_dict(config_json) -> dict:
    if isinstance(config_json, dict):
        return config_json
    try:
        return json.loads(config_json) if config_json else {}
    except (TypeError, ValueError):
        return {}


def restore_run(store: CheckpointStore, *, params_abstract, extra_abstract: dict[str, Any],
                config_json) -> Restored | None:
    """The newest good step of a training store, or None for a fresh workdir.

    config_json: this run's config (JSON text or dict); each step's meta holds the config it was
    saved under (meta["config"]), which the error compares with it.
    """
    try:
        return store.restore_newest_good(params_abstract=params_abstract, extra_abstract=extra_abstract)
    except CheckpointMismatch as e:
        step = store.latest_step()
        saved = _as_dict(store.meta(step).get("config")) if step is not None else {}
        diff = config_differences(saved, _as_dict(config_json))
        what = ("\n  ".join(diff[:20]) + (f"\n  ... and {len(diff) - 20} more" if len(diff) > 20 else "")) \
            if diff else "(no config difference recorded)"
        raise CheckpointMismatch(
            f"{e}.\nThe checkpoints in {store.directory} were saved under another configuration, and their "
            f"structure differs from what this run needs (e.g. grpo.beta > 0 keeps a reference copy in "
            f"the checkpoint). Config fields that differ (saved -> now):\n  {what}\n"
            "To continue that run, run again with its settings (set the fields above back); to train with "
            "the new settings, use a new --workdir (or start from its weights with "
            "--config.model.init=<the old checkpoints directory>).") from None


def abstract(tree):
    """ShapeDtypeStructs carrying each leaf's sharding (the restore targets `CheckpointStore.restore` takes)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def save_train_state(store: CheckpointStore, step: int, params: dict, opt_state, counters: dict, data_state,
                     *, meta: dict, extra: dict[str, Any] | None = None) -> None:
    """Save one training step (asynchronously, as `store` does).

    params: the whole model's parameters, a pure dict; counters: {"step", "skipped"} scalars;
    data_state: the stream's position (JSON); extra: further items by name (pytrees or JSON).
    """
    store.save(step, params=params, meta=meta,
               extra={"opt_state": opt_state, "counters": counters, "data": data_state, **(extra or {})})


@dataclasses.dataclass
class SavedTrainState:
    """One restored training step: the trees `save_train_state` took, on the shardings asked for."""

    step: int
    params: dict
    opt_state: Any
    counters: dict
    data_state: Any
    extra: dict[str, Any]  # the items a loop added (the pytrees asked for, every JSON item)


def restore_train_state(store: CheckpointStore, *, params: dict, opt_state, counters: dict, config_json,
                        extra: dict[str, Any] | None = None) -> SavedTrainState | None:
    """The newest good step of a training store (see `restore_run`), or None for a fresh workdir.

    params, opt_state, counters, extra (pytree items by name): live trees of this run, whose shapes,
    dtypes and shardings the restored arrays take. config_json: this run's config, which a step saved
    under another configuration is compared with in the error.
    """
    wanted = {"opt_state": abstract(opt_state), "counters": abstract(counters),
              **{name: abstract(tree) for name, tree in (extra or {}).items()}}
    out = restore_run(store, params_abstract=abstract(params), extra_abstract=wanted, config_json=config_json)
    if out is None:
        return None
    rest = {k: v for k, v in out.extra.items() if k not in ("opt_state", "counters", "data")}
    return SavedTrainState(step=out.step, params=out.params, opt_state=out.extra["opt_state"],
                           counters=out.extra["counters"], data_state=out.extra["data"], extra=rest)


def save_warmstart(save_dir, step: int, params, opt_state, stream, meta: dict) -> None:
    """Save a warm-start interrupted before its step `step` (SIGTERM): weights, optimizer, data position."""
    with CheckpointStore(save_dir, async_save=False, max_to_keep=1) as store:
        store.save(step, params=_pure(params), meta=meta, extra={"opt_state": opt_state, "data": stream.state()})


def restore_warmstart(save_dir, params, opt_state, stream):
    """(first step, params, opt_state) of a warm-start saved by `save_warmstart`, the stream restored;
    (0, params, opt_state) unchanged when nothing was saved."""
    if not CheckpointStore.exists(save_dir):
        return 0, params, opt_state
    with CheckpointStore(save_dir, async_save=False, max_to_keep=1) as store:
        out = store.restore_newest_good(params_abstract=abstract(_pure(params)),
                                        extra_abstract={"opt_state": abstract(opt_state)})
    if out is None:
        return 0, params, opt_state
    stream.restore(out.extra["data"])
    log.info("continuing the warm-start from step %d (saved in %s)", out.step, save_dir)
    if hasattr(params, "to_pure_dict"):  # an nnx.State: the same State with the restored arrays
        nnx.replace_by_pure_dict(params, out.params)
        return out.step, params, out.extra["opt_state"]
    return out.step, out.params, out.extra["opt_state"]


def _pure(params):
    """Plain nested dicts of arrays (an nnx.State's leaves carry `.value` in their key paths)."""
    return params.to_pure_dict() if hasattr(params, "to_pure_dict") else params


def remove_warmstart(save_dir) -> None:
    """Delete a warm-start's partial save once GRPO's step 0 (which holds its result) is committed."""
    path = absolute(save_dir)
    if jax.process_index() == 0 and path.exists():
        path.rmtree()
