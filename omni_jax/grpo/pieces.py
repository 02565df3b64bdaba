"""A run's pieces, built in one place for the GRPO trainer, the SFT loop and the TPU fit check.

    pieces = build_run(config, tokenizer)                                        # arrays on pieces.layout
    pieces = build_run(config, tokenizer, devices=slice_devices, abstract=True)  # ShapeDtypeStructs

`RunPieces` holds the layout (`config_utils.layout`: a mesh of `config.mesh`'s sizes and the
logical-axis rules of `config.mesh.rules`),
the model, the LoRA config, the model's split into trainable parameters and a frozen rest, the
optimizer, the GRPO step's static configuration and the `TrainState` the steps carry, whose
optimizer state is born sharded like the parameters. Abstract pieces (e.g. on a TPU slice's
compile-only devices) are ShapeDtypeStructs carrying the shardings the real arrays get, so the
fit check compiles the very steps a run jits; their model is the config's architecture (a loaded
init brings its own). `data_stream` is a run's global batch stream, the same for GRPO and SFT.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from omni_jax import config_utils, parallel
from omni_jax.checkpoint import thinker_meta
from omni_jax.checkpoint.loading import param_shardings
from omni_jax.data import mixture_from_config
from omni_jax.grpo.policy import build_model, model_options
from omni_jax.grpo.step import StepConfig, TrainState, init_opt_state, opt_state_shardings, optimizer_from_config, \
    step_config_from_config, trainable_filter
from omni_jax.model import lora, presets
from omni_jax.model.config import ThinkerConfig
from omni_jax.model.thinker import Thinker, abstract_thinker


@dataclasses.dataclass(frozen=True)
class RunPieces:
    """What a run builds before its first step (see the module docstring).

    model: the Thinker as built (abstract: ShapeDtypeStruct leaves, no shardings); graphdef,
    state.params (the trainable parameters) and frozen are its split by the `trainable` filter;
    step_cfg: the GRPO train step's static configuration (the SFT loop does not use it); layout:
    the mesh and logical-axis rules every array of the run is placed by.
    """

    layout: parallel.Layout
    model_cfg: ThinkerConfig
    model: Thinker
    lora_cfg: lora.LoRAConfig | None
    trainable: Any
    graphdef: nnx.GraphDef
    frozen: nnx.State
    optimizer: optax.GradientTransformation
    step_cfg: StepConfig
    state: TrainState

    def policy(self, params=None) -> Thinker:
        """The model with `params` (default: state.params) as its trainable parameters."""
        return nnx.merge(self.graphdef, self.state.params if params is None else params, self.frozen)

    def checkpoint_params(self, params=None) -> dict:
        """Every parameter of `policy(params)` as a pure dict: a checkpoint step's params item."""
        return nnx.state(self.policy(params), nnx.Param).to_pure_dict()

    def with_params(self, params) -> RunPieces:
        """These pieces with new trainable `params` and a fresh optimizer state (step and skipped 0)."""
        return dataclasses.replace(self, state=_fresh_state(self.optimizer, params, self.layout))

    def restored(self, params: dict, opt_state, counters: dict) -> RunPieces:
        """These pieces with a checkpoint's parameters (every parameter of the model, a pure dict), optimizer
        state and counters; the model takes the restored parameters in place and is split again."""
        model_params = nnx.state(self.model, nnx.Param)
        nnx.replace_by_pure_dict(model_params, params)
        nnx.update(self.model, model_params)
        graphdef, trainable_params, frozen = nnx.split(self.model, self.trainable, ...)
        return dataclasses.replace(self, graphdef=graphdef, frozen=frozen,
                                   state=TrainState(counters["step"], trainable_params, opt_state, counters["skipped"]))


def build_run(config, tokenizer, *, devices=None, abstract: bool = False) -> RunPieces:
    """The pieces of a run of `config` on `devices` (default: every device of the job).

    tokenizer: the run's tokenizer (the tiny architecture takes its vocabulary from it; abstract
    pieces of a real architecture need none). abstract: ShapeDtypeStructs with shardings instead
    of arrays, nothing allocated (devices may be compile-only). The caller validates the config.
    """
    layout = config_utils.layout(config, devices)
    lora_cfg = lora.config_from(config)
    trainable = trainable_filter(adapters=lora_cfg is not None)
    optimizer = optimizer_from_config(config)
    step_cfg = step_config_from_config(config, layout.shape["data"] * layout.shape["fsdp"])
    if abstract:
        cfg = model_config(config, tokenizer)
        model = abstract_thinker(cfg)
        if lora_cfg is not None:  # adapters trained, base frozen
            model = lora.abstract_with_adapters(model, lora_cfg)
        graphdef, params, frozen = nnx.split(model, trainable, ...)
        params, frozen = abstract_state(params, layout), abstract_state(frozen, layout)
        # As init_opt_state makes it: each moment sharded like its parameter, counters replicated.
        opt_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                 jax.eval_shape(optimizer.init, params), opt_state_shardings(optimizer, params))
        replicated = layout.replicated
        state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated), params=params,
                           opt_state=opt_state, skipped=jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated))
    else:
        model = build_model(config, tokenizer, layout)
        cfg = model.cfg
        graphdef, params, frozen = nnx.split(model, trainable, ...)
        # Every array committed to the mesh up front: host-local scalars cannot be checkpointed on
        # several hosts, and uncommitted inputs would make the first step compile twice.
        frozen = layout.place(frozen)
        state = _fresh_state(optimizer, params, layout)
    return RunPieces(layout=layout, model_cfg=cfg, model=model, lora_cfg=lora_cfg,
                     trainable=trainable, graphdef=graphdef, frozen=frozen, optimizer=optimizer, step_cfg=step_cfg,
                     state=state)


def _fresh_state(optimizer, params, layout: parallel.Layout) -> TrainState:
    # The optimizer state is born sharded like the parameters (place would replicate a plain init's).
    return layout.place(TrainState(jnp.int32(0), params, init_opt_state(optimizer, params), jnp.int32(0)))


def model_config(config, tokenizer) -> ThinkerConfig:
    """The ThinkerConfig of `config.model.architecture` with the run's model options (dtypes, remat, ...)."""
    return presets.architecture_config(config.model.architecture, tokenizer, **model_options(config))


def abstract_state(state: nnx.State, layout: parallel.Layout) -> nnx.State:
    """An nnx State (e.g. of an abstract model) as ShapeDtypeStructs carrying the shardings its
    variables' logical axes get on `layout`."""
    shardings = param_shardings(state, layout)
    return jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s), state, shardings,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))


def counters(state: TrainState) -> dict:
    """A checkpoint's "counters" item: optimizer steps taken and updates skipped."""
    return {"step": state.step, "skipped": state.skipped}


def run_meta(config, pieces: RunPieces, source: dict | None = None) -> dict:
    """The meta every checkpoint step of the run carries: the model's config, the run's config, LoRA's settings."""
    meta = thinker_meta(pieces.model_cfg, source=source)
    meta["config"] = config.to_json_best_effort()
    if pieces.lora_cfg is not None:
        meta["lora"] = pieces.lora_cfg.to_dict()
    return meta


def data_stream(config, tokenizer, batch_size: int, **data_overrides):
    """The mixture of `config.data` (any of its fields overridden), `batch_size` prompts a batch.

    Every process reads the whole global batch (process 0 of 1): the multi-host program is the
    single-host program, and the batch is sharded on the layout afterwards.
    """
    data_cfg = config.data.copy_and_resolve_references()
    with data_cfg.unlocked():
        data_cfg.batch_size = int(batch_size)
        for name, value in data_overrides.items():
            setattr(data_cfg, name, value)
    return mixture_from_config(data_cfg, tokenizer, process_index=0, process_count=1)
