"""`CheckpointStore`: the one checkpoint format of omni_jax, for conversion output and training.

A store is an Orbax `CheckpointManager` directory of integer steps (local path or gs://):

    <directory>/
      <step>/                      one directory per step, committed atomically by Orbax
        params/                    the Thinker parameters: nnx.state(model, nnx.Param).to_pure_dict()
        meta/metadata              JSON: hf_config, provenance, omni_jax version, item kinds, time
        <name>/                    extra items of a training step: pytrees of arrays (optimizer
                                   state, RNG key) or JSON (data-iterator position, counters)

A step is written into a temporary directory and renamed (or marked by a commit file on GCS)
only when complete, so an interrupted save never appears in `all_steps()` and never loads.
Every process of a multi-host job makes the same calls; arrays are written and read per shard.

The meta of a step holds a checksum of every array saved (`verify.checksums`); `restore` checks
the arrays it reads against them and that every float is finite, and raises DamagedCheckpoint
otherwise. `restore_newest_good` walks back from the newest step to the newest one that restores
and verifies, moving damaged steps aside (`<step>.damaged`, never deleted). keep-N (`max_to_keep`)
never deletes the newest step known to restore and verify, whatever the newer steps are.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import logging
import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from omni_jax.checkpoint import streaming, verify
from omni_jax.checkpoint.streaming import StreamedArray, TensorStoreLeaf, pytree_handler
from omni_jax.checkpoint.verify import CheckpointMismatch, DamagedCheckpoint
from omni_jax.version import __version__
from omni_jax.weights import mapping

log = logging.getLogger(__name__)
PARAMS, META = "params", "meta"
PYTREE, JSON = "pytree", "json"
_ARRAY_TYPES = (jax.Array, np.ndarray, StreamedArray)


@dataclasses.dataclass
class Restored:
    """What `CheckpointStore.restore` returns: params / extra trees with arrays on their shardings."""

    step: int
    params: Any
    extra: dict[str, Any]
    meta: dict[str, Any]


class CheckpointStore:
    """Save and restore omni_jax checkpoints (params + meta + extra items) by integer step.

    directory: local path or gs:// URL. max_to_keep: keep the newest N steps (None keeps all).
    async_save: `save` returns once arrays are copied off the devices; writing goes on in the
    background (call `wait()` before reading the step back or exiting). read_only: never writes.
    """

    def __init__(self, directory, *, max_to_keep: int | None = None, async_save: bool = True,
                 read_only: bool = False):
        self.directory = absolute(directory)
        # keep-N is applied here (`_prune`), not by Orbax: the newest verified step must survive.
        self._keep, self._read_only, self.verified_step, self._newest_finite = max_to_keep, read_only, None, None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None, enable_async_checkpointing=async_save, read_only=read_only,
            create=not read_only, cleanup_tmp_directories=not read_only)
        # Handlers by argument type for any item name: extra items are named by the caller.
        registry = ocp.DefaultCheckpointHandlerRegistry()
        pytree, json_handler = pytree_handler(), ocp.JsonCheckpointHandler()
        for args_type, handler in ((ocp.args.PyTreeSave, pytree), (ocp.args.PyTreeRestore, pytree),
                                   (ocp.args.JsonSave, json_handler), (ocp.args.JsonRestore, json_handler)):
            registry.add(None, args_type, handler)
        # Named too, so the params tree metadata can be read before any restore.
        registry.add(PARAMS, ocp.args.PyTreeSave, pytree)
        registry.add(PARAMS, ocp.args.PyTreeRestore, pytree)
        self._manager = ocp.CheckpointManager(self.directory, options=options, handler_registry=registry)

    # ---- writing -------------------------------------------------------------------------------

    def save(self, step: int, *, params, meta: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        """Write step `step` (asynchronously unless the store was made with async_save=False).

        params: the Thinker parameter tree (a nested dict of jax.Array / np.ndarray / StreamedArray,
          exactly `nnx.state(model, nnx.Param).to_pure_dict()`).
        meta: JSON-serialisable dict; must hold "hf_config" (the HF config.json dict) so the step
          can be loaded and exported on its own (`thinker_meta(cfg)` builds it).
        extra: name -> item. An item holding any array is saved as an Orbax pytree (optimizer
          state, RNG key: typed keys are fine); an item without arrays must be JSON (iterator
          position, counters) and is saved as JSON.
        """
        extra = dict(extra or {})
        if "hf_config" not in meta:
            raise ValueError("meta must hold 'hf_config' (the HF config.json dict) so the checkpoint can be loaded "
                             "and exported; build it with omni_jax.checkpoint.thinker_meta(cfg)")
        kinds = {}
        for name, value in extra.items():
            if name in (PARAMS, META) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"extra item name {name!r}: use an identifier other than {PARAMS!r} / {META!r}")
            kinds[name] = PYTREE if _has_arrays(value) else JSON
            if kinds[name] == JSON:
                _check_json(name, value)
        full_meta = copy.deepcopy(dict(meta))
        summaries = {PARAMS: verify.summarize(params)}
        summaries.update({name: verify.summarize(value) for name, value in extra.items() if kinds[name] == PYTREE})
        sums = {item: {path: [d, c] for path, (d, c, _) in s.items()} for item, s in summaries.items()}
        non_finite = [f"{item}{path}" for item, s in summaries.items() for path, (_, _, ok) in s.items() if not ok]
        if non_finite:  # saved as asked, but keep-N keeps the newest step without NaN / inf
            log.warning("step %d is saved with NaN or infinite values in %s; it will not restore", step,
                        ", ".join(non_finite[:5]))
        else:
            self._newest_finite = int(step)
        full_meta.update(step=int(step), items=kinds, omni_jax_version=_version(), checksums=sums,
                         saved_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        _check_json(META, full_meta)
        args = {PARAMS: ocp.args.PyTreeSave(params, save_args=_chunking(params)),
                META: ocp.args.JsonSave(full_meta)}
        for name, value in extra.items():
            args[name] = ocp.args.PyTreeSave(value) if kinds[name] == PYTREE else ocp.args.JsonSave(value)
        self._manager.save(int(step), args=ocp.args.Composite(**args), force=True)
        self._prune(int(step))

    def _prune(self, newest: int) -> None:
        """Delete steps beyond the newest max_to_keep, except the newest step known to verify."""
        if self._keep is None or self._read_only:
            return
        steps = sorted(set(self.all_steps()) | {newest})
        keep = set(steps[-self._keep:]) | {s for s in (self.verified_step, self._newest_finite) if s is not None}
        for step in steps:
            if step not in keep:
                self._manager.delete(step)

    def wait(self) -> None:
        """Block until every pending asynchronous save is committed."""
        self._manager.wait_until_finished()

    # ---- reading -------------------------------------------------------------------------------

    @staticmethod
    def exists(directory) -> bool:
        """Whether `directory` holds anything (a store to open), without creating it."""
        path = absolute(directory)
        return path.exists() and any(path.iterdir())

    def all_steps(self) -> list[int]:
        """Committed steps, ascending (interrupted saves are never listed)."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def resolve_step(self, step: int | None = None) -> int:
        """`step`, or the latest committed step; a clear error when there is none."""
        if not self.directory.exists():
            raise FileNotFoundError(f"checkpoint directory {self.directory} does not exist")
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(
                f"no complete checkpoint step in {self.directory}: it is empty or holds only an interrupted save "
                "(*.orbax-checkpoint-tmp-* directories never load); re-run the conversion or training save")
        if step is None:
            return steps[-1]
        if int(step) not in steps:
            raise FileNotFoundError(f"step {step} is not in {self.directory}; committed steps: {steps}")
        return int(step)

    def meta(self, step: int | None = None) -> dict[str, Any]:
        """The meta JSON of `step` (latest by default)."""
        step = self.resolve_step(step)
        return dict(self._manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META])

    def restore(self, step: int | None = None, *, params_abstract=None,
                extra_abstract: dict[str, Any] | None = None) -> Restored:
        """Read `step` (latest by default) straight onto the requested shardings.

        params_abstract: the params tree with jax.ShapeDtypeStruct leaves that carry `.sharding`
          (and the dtype to restore as); None skips params.
        extra_abstract: name -> abstract pytree (same convention) for the pytree items wanted.
          JSON items are always returned.
        Each process reads only the slices its devices hold.
        """
        step = self.resolve_step(step)
        meta = self.meta(step)
        kinds = meta.get("items", {})
        args = {}
        if params_abstract is not None:
            args[PARAMS] = _restore_args(PARAMS, params_abstract)
        for name, abstract in (extra_abstract or {}).items():
            if kinds.get(name) != PYTREE:
                raise CheckpointMismatch(f"step {step} of {self.directory} has no pytree item {name!r}; it has {kinds}")
            args[name] = _restore_args(name, abstract)
        for name, kind in kinds.items():
            if kind == JSON:
                args[name] = ocp.args.JsonRestore()
        out = self._manager.restore(step, args=ocp.args.Composite(**args)) if args else {}
        extra = {name: out[name] for name in args if name != PARAMS}
        sums = meta.get("checksums", {})
        found = [f"{name}{p}" for name in args if kinds.get(name, PYTREE) == PYTREE or name == PARAMS
                 for p in verify.problems(out[name], sums.get(name))]
        if found:
            raise DamagedCheckpoint(f"step {step} of {self.directory} is damaged: " + "; ".join(found[:5])
                                    + (f"; and {len(found) - 5} more" if len(found) > 5 else ""))
        return Restored(step=step, params=out[PARAMS] if PARAMS in args else None, extra=extra, meta=meta)

    def restore_newest_good(self, *, params_abstract=None, extra_abstract: dict[str, Any] | None = None,
                            check_meta=None) -> Restored | None:
        """`restore` of the newest step that restores and verifies; None when there is no step.

        A step that fails (missing or truncated files, checksums that differ, NaN / inf) is logged
        with a warning naming it and the next older step is tried; once one is good, the newer
        damaged ones are moved aside to `<step>.damaged` (kept, no longer steps). check_meta(meta) may raise to refuse a step that is whole but does not fit the run
        (a changed config): that error goes to the caller at once. Raises DamagedCheckpoint when
        steps exist and none is good.
        """
        if not self.directory.exists():
            return None
        failures = []
        for step in reversed(self.all_steps()):
            try:
                meta = self.meta(step)
            except Exception as e:  # an unreadable meta is damage like any other
                meta, error = None, e
            if meta is not None:
                if check_meta is not None:
                    check_meta(meta)
                kinds = meta.get("items", {})
                missing = sorted(n for n in (extra_abstract or {}) if kinds.get(n) != PYTREE)
                if missing:  # a whole step of another structure: not damage, never moved aside
                    raise CheckpointMismatch(f"step {step} of {self.directory} has no item {missing} (it holds "
                                             f"{sorted(kinds)}): it was saved by a run of another configuration")
                try:
                    shapes = self._params_shapes(step) if params_abstract is not None else None
                except Exception as e:  # unreadable tree metadata: damage, handled below
                    shapes, error = None, e
                    meta = None
            if meta is not None and shapes is not None:
                want = {jax.tree_util.keystr(p): tuple(x.shape)
                        for p, x in jax.tree_util.tree_flatten_with_path(params_abstract)[0]}
                if shapes != want:
                    diff = sorted(k for k in set(shapes) | set(want) if shapes.get(k) != want.get(k))
                    raise CheckpointMismatch(
                        f"step {step} of {self.directory} holds parameters of another shape or structure "
                        f"(e.g. {diff[0]}: saved {shapes.get(diff[0])}, wanted {want.get(diff[0])}; "
                        f"{len(diff)} differ): it was saved by a run of another model configuration")
            if meta is not None:
                try:
                    restored = self.restore(step, params_abstract=params_abstract, extra_abstract=extra_abstract)
                    self.verified_step = step
                    if failures:  # moved aside only once a good step is found: new saves reuse their numbers
                        for bad, _ in failures:
                            self._move_aside(bad)
                        log.warning("resuming from step %d, the newest good step of %s; damaged steps %s were "
                                    "moved aside as <step>.damaged", step, self.directory,
                                    ", ".join(str(f[0]) for f in failures))
                    return restored
                except Exception as e:
                    error = e
            message = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
            failures.append((step, message))
            log.warning("checkpoint step %d of %s cannot be used (%s); trying the step before it", step,
                        self.directory, message)
        if failures:
            raise DamagedCheckpoint(f"no step of {self.directory} restores and verifies: "
                                    + "; ".join(f"step {s}: {m}" for s, m in failures)
                                    + " (nothing was moved or deleted; start a new --workdir, or repair the files)")
        return None

    def _params_shapes(self, step: int) -> dict[str, tuple]:
        tree = self._manager.item_metadata(step)[PARAMS].tree
        return {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}

    def _move_aside(self, step: int) -> None:
        """Rename a damaged step to <step>.damaged (kept for inspection, no longer a step)."""
        if self._read_only:
            return
        if jax.process_index() == 0:
            src = self.directory / str(step)
            dst = self.directory / f"{step}.damaged"
            n = 1
            while dst.exists():
                n += 1
                dst = self.directory / f"{step}.damaged{n}"
            src.rename(dst)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes(f"omni_jax_move_aside_{step}")
        self._manager.reload()

    def open_params(self, step: int | None = None):
        """The params tree of `step` with each leaf an open `tensorstore.TensorStore` (nothing read).

        Slice and read what you need: `leaf[i].read().result()` is layer i of a stacked parameter.
        """
        step = self.resolve_step(step)
        tree = self._manager.item_metadata(step)[PARAMS].tree
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=TensorStoreLeaf), tree)
        args = ocp.args.PyTreeRestore(restore_args=restore_args)
        return self._manager.restore(step, args=ocp.args.Composite(**{PARAMS: args}))[PARAMS]

    # ---- lifecycle -----------------------------------------------------------------------------

    def reached_preemption(self, step: int) -> bool:
        """True when the job is being preempted (e.g. TPU maintenance): save now, then exit."""
        return self._manager.reached_preemption(step)

    def close(self) -> None:
        """Wait for pending saves and release the manager."""
        self._manager.close()

    def __enter__(self) -> "CheckpointStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def absolute(path) -> epath.Path:
    """`path` as an epath; a local one made absolute (Orbax refuses relative paths), URLs as given."""
    text = os.fspath(path) if not isinstance(path, str) else path
    if "://" in str(text):
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def _version() -> str:
    return __version__


def _has_arrays(tree) -> bool:
    return any(isinstance(x, _ARRAY_TYPES) for x in jax.tree.leaves(tree))


def _check_json(name: str, value) -> None:
    try:
        json.dumps(value)
    except TypeError as e:
        raise TypeError(f"checkpoint item {name!r} holds no arrays, so it is saved as JSON, but it is not "
                        f"JSON-serialisable: {e}") from e


def _chunking(params):
    """SaveArgs storing stacked layers one per chunk (one layer reads without the rest) and large
    streamed matrices in CHUNK_BYTES pieces (written and read a piece at a time)."""
    stacked = mapping.stacked_paths()

    def one(path, leaf):
        if isinstance(leaf, StreamedArray):
            layered, large = leaf.layers and leaf.ndim >= 2, leaf.nbytes > streaming.CHUNK_BYTES
        else:
            names = tuple(str(getattr(k, "key", k)) for k in path)
            layered, large = names in stacked and len(getattr(leaf, "shape", ())) >= 2, False
        if layered:
            return ocp.SaveArgs(shard_axes=(0,))
        return ocp.SaveArgs(chunk_byte_size=streaming.CHUNK_BYTES) if large else ocp.SaveArgs()

    return jax.tree_util.tree_map_with_path(one, params)


def _restore_args(name: str, abstract) -> ocp.args.PyTreeRestore:
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        if isinstance(leaf, jax.ShapeDtypeStruct) and getattr(leaf, "sharding", None) is None:
            raise ValueError(f"{name}{jax.tree_util.keystr(path)}: the abstract leaf has no sharding; give every "
                             "jax.ShapeDtypeStruct a sharding (e.g. from omni_jax.checkpoint.loading.param_shardings)")
    return ocp.args.PyTreeRestore(item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))
