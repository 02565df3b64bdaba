"""Load HF safetensors into the Flax Thinker through the mapping table.

Tensors are read one at a time (positioned reads of just their bytes) and, when a sharding is given, only the slices a
process's own devices hold are ever materialised (`jax.make_array_from_callback`), so a 7B model
is never whole on one host.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from omni_jax.weights import mapping
from omni_jax.weights.safetensors_io import SafetensorsReader
from omni_jax.model.config import ThinkerConfig

# Parts of a full Qwen2.5-Omni checkpoint that are not the Thinker (speech output).
NON_THINKER_PREFIXES = ("talker.", "token2wav.")


class WeightMismatchError(ValueError):
    """The checkpoint's tensors do not fit the config: lists every problem at once."""


def thinker_prefix(reader: SafetensorsReader) -> str:
    """'thinker.' for a full Qwen2.5-Omni checkpoint, '' for a thinker-only save."""
    return "thinker." if any(k.startswith("thinker.") for k in reader.keys()) else ""


def path_of(keypath) -> tuple[str, ...]:
    """Flax state key path → tuple of names (the Variable's `.value` dropped)."""
    names = []
    for k in keypath:
        name = getattr(k, "key", getattr(k, "name", None))
        if name != "value":
            names.append(str(name))
    return tuple(names)


def check_weights(reader: SafetensorsReader, cfg: ThinkerConfig, shapes: dict[tuple, tuple]) -> list[mapping.Row]:
    """Validate every tensor against the table; raise one error naming all problems.

    shapes: Flax path → Flax shape (from the abstract model). Returns the rows to load.
    """
    prefix = thinker_prefix(reader)
    rows = mapping.thinker_rows(cfg.text.tie_word_embeddings)
    missing, misshaped, seen = [], [], set()
    for row in rows:
        flax_shape = shapes[row.flax_path()]
        per_layer = flax_shape[1:] if row.stacked else flax_shape
        for _, name in mapping.hf_names(row, mapping.num_layers_for(row, cfg)):
            full = prefix + name
            seen.add(full)
            if full not in reader:
                missing.append(full)
            elif row.layout.flax_shape(reader.shape(full)) != tuple(per_layer):
                misshaped.append(f"{full}: checkpoint {reader.shape(full)}, config expects "
                                 f"{mapping.hf_shape(row, tuple(per_layer), cfg)}")
    unexpected = [k for k in reader.keys() if k not in seen and k.startswith(prefix)
                  and not k.startswith(NON_THINKER_PREFIXES)]
    raise_mismatch(f"checkpoint {reader.directory} does not fit its config:", missing, misshaped, unexpected)
    return rows


def raise_mismatch(header: str, missing, misshaped, unexpected) -> None:
    """One WeightMismatchError listing every missing, mis-shaped and unexpected tensor (none: return)."""
    if missing or misshaped or unexpected:
        lines = [header]
        for title, items in (("missing", missing), ("mis-shaped", misshaped), ("unexpected", unexpected)):
            if items:
                lines += [f"  {len(items)} {title}:"] + [f"    {x}" for x in items]
        raise WeightMismatchError("\n".join(lines))


def param_shapes(abstract_state) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax path → shape of every leaf of a (abstract) parameter state."""
    return {path_of(kp): tuple(leaf.shape) for kp, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}


def read_param(reader: SafetensorsReader, row: mapping.Row, cfg: ThinkerConfig, prefix: str, dtype,
               index: tuple[slice, ...] | None = None) -> np.ndarray:
    """One Flax parameter (or the `index` slice of it) as a NumPy array of `dtype`.

    Only the HF rows the slice needs are read from disk (a tensor-parallel or FSDP shard reads its
    part, not the whole tensor).
    """
    if not row.stacked:
        return read_layer(reader, row, prefix + row.hf, dtype, index)
    n = mapping.num_layers_for(row, cfg)
    layer_slice, rest = (index[0], index[1:]) if index else (slice(None), None)
    return np.stack([read_layer(reader, row, prefix + row.hf.format(i=i), dtype, rest) for i in range(n)[layer_slice]])


def read_layer(reader: SafetensorsReader, row: mapping.Row, name: str, dtype,
               index: tuple[slice, ...] | None = None) -> np.ndarray:
    """HF tensor `name` in the Flax layout of `row` (one layer), `index` slices over Flax axes."""
    if not index:
        return np.asarray(row.layout.to_flax(reader.read(name)), dtype=dtype)
    axis = row.layout.hf_rows_axis
    rows = index[axis] if axis < len(index) else None
    flax = row.layout.to_flax(reader.read(name, rows))
    rest = tuple(slice(None) if i == axis else s for i, s in enumerate(index))
    return np.asarray(flax[rest], dtype=dtype)


def load_params(source, cfg: ThinkerConfig, abstract_state, shardings=None,
                progress: Callable | None = None):
    """A state (same tree as `abstract_state`) filled from the HF checkpoint `source`.

    source: its directory, or a SafetensorsReader already open on it (headers parsed once).
    shardings: optional tree of jax.sharding.Sharding matching abstract_state (None → one device).
    """
    reader = source if isinstance(source, SafetensorsReader) else SafetensorsReader(source)
    prefix = thinker_prefix(reader)
    leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    rows = {row.flax_path(): row for row in check_weights(reader, cfg, param_shapes(abstract_state))}
    flat_shardings = jax.tree.leaves(shardings) if shardings is not None else [None] * len(leaves)
    out = []
    for (kp, leaf), sharding in zip(leaves, flat_shardings):
        row = rows[path_of(kp)]
        dtype = np.dtype(leaf.dtype)
        if sharding is None:
            arr = jax.numpy.asarray(read_param(reader, row, cfg, prefix, dtype))
        else:
            arr = jax.make_array_from_callback(
                tuple(leaf.shape), sharding, lambda idx, row=row, dtype=dtype: read_param(reader, row, cfg, prefix, dtype, idx))
        out.append(arr)
        if progress:
            progress(row)
    treedef = jax.tree_util.tree_structure(abstract_state)
    return jax.tree_util.tree_unflatten(treedef, out)
