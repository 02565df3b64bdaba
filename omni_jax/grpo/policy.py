"""The policy and reference models of a run: built or loaded directly onto its layout (mesh + rules).

Random initialisation (the tiny default) runs under `jax.jit` with the parameter shardings as
`out_shardings`, so even a large model is born sharded; real runs load an HF directory or an
omni_jax checkpoint through `load_thinker`, which places each tensor on its sharding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from omni_jax import parallel
from omni_jax.checkpoint.loading import load_thinker, param_shardings
from omni_jax.model import lora, presets
from omni_jax.model.thinker import Thinker, abstract_thinker


def model_options(config) -> dict:
    """The ThinkerConfig options of a run's `config.model` (dtypes, remat, attention chunks, layer loop)."""
    m = config.model
    return dict(dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat, attention_query_chunk=m.attention_query_chunk,
                attention_key_chunk=m.attention_key_chunk, layer_loop=m.layer_loop)


def build_model(config, tokenizer, layout: parallel.Layout) -> Thinker:
    """The Thinker the config names (`model.init`: "random" or a checkpoint path), sharded on `layout`,
    with fresh LoRA adapters when `lora.rank` > 0 (placed by their logical axes). An init that is a
    LoRA checkpoint is merged first: it is the starting model (and GRPO's reference) as a whole."""
    model = _build_base(config, tokenizer, layout)
    if lora.has_adapters(model):  # a LoRA checkpoint as init (e.g. the SFT stage): its adapters join the base
        model = lora.merged(model)
    lora_cfg = lora.config_from(config)
    if lora_cfg is not None:
        add_adapters(model, lora_cfg, int(config.seed), layout)
    return model


def add_adapters(model: Thinker, lora_cfg: lora.LoRAConfig, seed: int, layout: parallel.Layout) -> Thinker:
    """`lora.add_adapters`, the adapters placed on `layout` by their logical axes."""
    lora.add_adapters(model, lora_cfg, seed=seed)
    adapters = nnx.state(model, nnx.LoRAParam)
    nnx.update(model, jax.device_put(adapters, param_shardings(adapters, layout)))
    return model


def fold_adapters(model: Thinker, seed: int, layout: parallel.Layout) -> Thinker:
    """The model with its adapters merged into the base weights and fresh adapters (B = 0) on top:
    the same function, a new base (e.g. after a LoRA warm-start, so GRPO's reference is the
    warm-started model)."""
    cfg = lora.adapter_config(model)
    return add_adapters(lora.merged(model), cfg, seed, layout)


def _build_base(config, tokenizer, layout: parallel.Layout) -> Thinker:
    if config.model.init in ("", None):
        raise ValueError("config.model.init is empty: set it to 'random' or to an HF / omni_jax checkpoint directory")
    if config.model.init != "random":
        m = config.model
        options = {k: v for k, v in model_options(config).items() if k not in ("dtype", "param_dtype")}
        return load_thinker(m.init, m.dtype, param_dtype=m.param_dtype, layout=layout,
                            progress=jax.process_index() == 0, **options)
    cfg = presets.architecture_config(config.model.architecture, tokenizer, **model_options(config))
    graphdef, abstract = nnx.split(abstract_thinker(cfg))
    shardings = param_shardings(abstract, layout)

    def init():
        return nnx.split(Thinker(cfg, rngs=nnx.Rngs(config.seed)))[1]

    return nnx.merge(graphdef, jax.jit(init, out_shardings=shardings)())


def reference_params(params, dtype: str):
    """A frozen copy of the trainable parameters in the reference dtype (a new buffer)."""
    return jax.tree.map(lambda x: x.astype(jnp.dtype(dtype)) if x.dtype != jnp.dtype(dtype) else jnp.copy(x), params)
