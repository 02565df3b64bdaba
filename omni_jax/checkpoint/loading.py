"""`load_thinker`: config + abstract model + parameters placed from the checkpoint.

The checkpoint is either an HF directory (config.json + safetensors) or an omni_jax
`CheckpointStore` (conversion output or a training run; optionally one step of it).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
from flax import nnx
from tqdm import tqdm

from omni_jax import parallel
from omni_jax.checkpoint.thinker import is_checkpoint, open_thinker_step
from omni_jax.model import lora
from omni_jax.model.config import from_hf_dict, load_config
from omni_jax.model.thinker import Thinker, abstract_thinker
from omni_jax.weights import hf_load, peft


def param_shardings(abstract_state, layout: parallel.Layout):
    """NamedSharding on `layout` for every parameter from its logical axes (`out_sharding` metadata)."""
    def one(var):
        return layout.sharding(var.get_metadata().get("out_sharding") or (None,) * var.ndim, var.shape)
    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def abstract_params(abstract_state, layout: parallel.Layout | None = None) -> dict:
    """The params pure dict with jax.ShapeDtypeStruct leaves carrying their target shardings.

    This is the `params_abstract` that `CheckpointStore.restore` takes. abstract_state: from
    `nnx.split(abstract_thinker(cfg))`; layout None places everything on the first device.
    """
    if layout is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        by_path = None
    else:
        tree = param_shardings(abstract_state, layout)
        flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))[0]
        by_path = {hf_load.path_of(kp): sharding for kp, sharding in flat}

    def one(kp, leaf):
        sharding = device if by_path is None else by_path[hf_load.path_of(kp)]
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    return jax.tree_util.tree_map_with_path(one, abstract_state.to_pure_dict())


def load_thinker(path, dtype="float32", *, param_dtype=None, layout: parallel.Layout | jax.sharding.Mesh | None = None,
                 progress=True, step=None, adapter=None, **options) -> Thinker:
    """The Thinker of an HF directory (config.json + safetensors) or of an omni_jax checkpoint store
    or one step of it (step `step`; None: the latest committed one; a LoRA run's: with its adapters).

    dtype: compute dtype; param_dtype: storage dtype of the weights (default: dtype); layout: place
    every parameter by its logical axes on that `parallel.Layout`'s mesh and rules (a bare Mesh is
    `Layout(mesh)`: DEFAULT_RULES), else (None) on the default device; progress: a progress bar;
    adapter: a PEFT LoRA adapter directory put onto the loaded base (`omni_jax.weights.peft`);
    options: ThinkerConfig fields that are not in the checkpoint (remat, attention_query_chunk,
    layer_loop, ...). FileNotFoundError without a config.json; ValueError for `step` with an HF
    directory.
    """
    layout = parallel.as_layout(layout)
    model = _load(path, dtype, param_dtype, layout, progress, step, options)
    if adapter is not None:
        if lora.has_adapters(model):
            raise ValueError(f"{path} already has LoRA adapters; load it without adapter={adapter}")
        peft.attach(model, adapter)
        if layout is not None:
            adapters = nnx.state(model, nnx.LoRAParam)
            nnx.update(model, jax.device_put(adapters, param_shardings(adapters, layout)))
    return model


def _load(path, dtype, param_dtype, layout, progress, step, options) -> Thinker:
    if is_checkpoint(path):
        return _load_from_store(path, step, dtype, param_dtype, layout, progress, options)
    if step is not None:
        raise ValueError(f"step={step} only applies to an omni_jax checkpoint store; {path} is an HF directory")
    path = pathlib.Path(path)
    cfg = load_config(path, dtype=jnp.dtype(dtype).name, param_dtype=jnp.dtype(param_dtype or dtype).name,
                      **options)
    graphdef, abstract_state = nnx.split(abstract_thinker(cfg))
    shardings = None
    if layout is not None:
        shardings = param_shardings(abstract_state, layout)
        shardings = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    n = len(jax.tree.leaves(abstract_state))
    with tqdm(total=n, desc=f"loading {path.name}", unit="tensor", disable=not progress) as bar:
        state = hf_load.load_params(path, cfg, abstract_state, shardings, progress=lambda _: bar.update())
    return nnx.merge(graphdef, state)


def _load_from_store(path, step, dtype, param_dtype, layout, progress, options) -> Thinker:
    store, directory, step, meta = open_thinker_step(path, step)
    cfg = from_hf_dict(meta["hf_config"], dtype=jnp.dtype(dtype).name,
                       param_dtype=jnp.dtype(param_dtype or dtype).name, **options)
    abstract = abstract_thinker(cfg)
    if meta.get("lora"):  # a LoRA run's checkpoint: the base weights and the adapters
        abstract = lora.abstract_with_adapters(abstract, lora.LoRAConfig.from_dict(meta["lora"]))
    graphdef, abstract_state = nnx.split(abstract)
    with tqdm(total=1, desc=f"restoring step {step} of {directory.name}", disable=not progress) as bar:
        params = store.restore(step, params_abstract=abstract_params(abstract_state, layout)).params
        bar.update()
    nnx.replace_by_pure_dict(abstract_state, params)
    return nnx.merge(graphdef, abstract_state)
