"""`load_thinker`: config + abstract model + parameters placed from the checkpoint."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
from flax import nnx
from tqdm import tqdm

from omni_jax import parallel
from omni_jax.convert import hf_load
from omni_jax.model.config import load_config
from omni_jax.model.thinker import Thinker, abstract_thinker


def param_shardings(abstract_state, mesh, rules=parallel.DEFAULT_RULES):
    """NamedSharding for every parameter from its logical axes (`out_sharding` metadata)."""
    def one(var):
        return parallel.named_sharding(var.get_metadata().get("out_sharding") or (None,) * var.ndim,
                                       var.shape, mesh, rules)
    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def load_thinker(path, dtype="float32", *, param_dtype=None, mesh=None, rules=None, progress=True,
                 **options) -> Thinker:
    path = pathlib.Path(path)
    cfg = load_config(path, dtype=jnp.dtype(dtype).name, param_dtype=jnp.dtype(param_dtype or dtype).name,
                      **options)
    graphdef, abstract_state = nnx.split(abstract_thinker(cfg))
    shardings = None
    if mesh is not None:
        shardings = param_shardings(abstract_state, mesh, rules or parallel.DEFAULT_RULES)
        shardings = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    n = len(jax.tree.leaves(abstract_state))
    with tqdm(total=n, desc=f"loading {path.name}", unit="tensor", disable=not progress) as bar:
        state = hf_load.load_params(path, cfg, abstract_state, shardings, progress=lambda _: bar.update())
    return nnx.merge(graphdef, state)
