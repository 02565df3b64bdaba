"""Will it fit? Compile the run's own steps for a TPU slice, deviceless, and add up HBM per chip.

    report = check_fit(config, "v5p-8")
    for step in report.steps: print(step.name, step.bytes_per_chip, step.fits, step.flops)

The steps are the very functions the run jits, on the run's own pieces built abstractly
(`grpo.pieces.build_run`: the same layout (mesh and logical-axis rules), parameter split,
optimizer state and shardings): the rollout's prefill and decode as `generate` builds them
(`omni_jax.rollout.sampler.build_rollout_steps`: the same jitted functions, static arguments and
input shardings), the donated GRPO train step (`grpo.step.jit_train_step`) and, with β > 0, the
reference log-prob pass (`build_logprob_fn`), on the config's worst-case batch (`aot.inputs`). Parameters, optimizer state and the reference
stay in HBM for the whole run, so each step's total is its compiled footprint (XLA's peak from
its buffer assignment: arguments, outputs and the temporaries live at the same time, donated
buffers reused; + code) plus the resident buffers it does not take as arguments (and, for
decode, the prefill's outputs and inputs that `generate` still holds). A step the compiler
itself rejects for HBM is reported with the bytes XLA asked for and fits = False.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from omni_jax import config_utils, parallel
from omni_jax.aot import estimate as estimate_lib
from omni_jax.aot import inputs as inputs_lib
from omni_jax.aot import topology as topology_lib
from omni_jax.aot.flops import jaxpr_flops
from omni_jax.grpo.experience import row_shardings
from omni_jax.grpo.pieces import abstract_state, build_run, model_config
from omni_jax.grpo.step import jit_logprob_fn, jit_train_step
from omni_jax.model import lora
from omni_jax.model.text import init_cache
from omni_jax.rollout import sampler
from omni_jax.rollout.sampling import Sampling
from omni_jax.tokenizer import load_tokenizer

STEPS = ("prefill", "decode", "train", "reference")


@dataclasses.dataclass
class StepReport:
    """HBM per chip of one compiled step (bytes) and its cost.

    params: policy + frozen towers + reference; optimizer: AdamW state; activations: the step's
    other arguments and outputs (inputs, KV cache, GRPO batch) and live buffers of the run;
    temporaries: XLA's temp buffers (intermediate activations, gradients, attention blocks).
    flops: whole program over all chips (matmuls, loops counted); roofline_seconds: the larger of
    flops / (chips × peak) and the step's minimum HBM traffic / (chips' bandwidth).
    """

    name: str
    params: int
    optimizer: int
    activations: int
    temporaries: int
    code: int
    hbm_bytes_per_chip: int
    flops: float
    compute_seconds: float
    memory_seconds: float
    estimate: dict[str, float]
    xla: dict
    compile_seconds: float
    error: str = ""  # XLA's out-of-memory message when the step did not even compile

    @property
    def bytes_per_chip(self) -> int:
        return self.params + self.optimizer + self.activations + self.temporaries + self.code

    @property
    def fits(self) -> bool:
        return not self.error and self.bytes_per_chip <= self.hbm_bytes_per_chip

    @property
    def roofline_seconds(self) -> float:
        return max(self.compute_seconds, self.memory_seconds)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_seconds >= self.memory_seconds else "memory"

    def to_json(self) -> dict:
        return {"name": self.name, "bytes_per_chip": self.bytes_per_chip, "hbm_bytes_per_chip": self.hbm_bytes_per_chip,
                "fits": self.fits, "flops": self.flops, "params_bytes": self.params,
                "optimizer_bytes": self.optimizer, "activation_bytes": self.activations,
                "temporary_bytes": self.temporaries, "code_bytes": self.code,
                "roofline_seconds": self.roofline_seconds, "compute_seconds": self.compute_seconds,
                "memory_seconds": self.memory_seconds, "bound": self.bound,
                "estimate_bytes_per_chip": {k: int(v) for k, v in self.estimate.items()},
                "xla_memory_analysis": self.xla, "compile_seconds": round(self.compile_seconds, 1),
                **({"error": self.error} if self.error else {})}


@dataclasses.dataclass
class FitReport:
    """The fit check's answer for one slice: per-step HBM and cost (`steps`), the mesh, the
    shapes of one optimizer step and the parameter counts; `fits` when every step fits.
    """
    topology: str
    chips: int
    mesh: dict[str, int]
    hbm_bytes_per_chip: int
    peak_flops_per_chip: float
    hbm_bandwidth_per_chip: float
    shapes: dict
    parameters: dict[str, int]
    steps: list[StepReport]

    @property
    def fits(self) -> bool:
        return all(s.fits for s in self.steps)

    def to_json(self) -> dict:
        return {"topology": self.topology, "chips": self.chips, "mesh": self.mesh, "fits": self.fits,
                "hbm_bytes_per_chip": self.hbm_bytes_per_chip, "peak_flops_per_chip": self.peak_flops_per_chip,
                "hbm_bandwidth_per_chip": self.hbm_bandwidth_per_chip, "shapes": self.shapes,
                "parameters": self.parameters, "steps": [s.to_json() for s in self.steps]}


def _bytes_per_chip(tree) -> int:
    """HBM one chip holds for abstract arrays carrying shardings (the largest shard)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
        total += math.prod(shape) * x.dtype.itemsize  # (a PRNG key dtype has an itemsize too)
    return total


def _row_shardings(layout: parallel.Layout):
    """Fallback output shardings when a step did not compile: rows over the batch axes, as the run lays them."""
    def one(x):
        if len(x.shape) == 5:  # the KV cache [L, rows, S, K, H], as `_prefill` constrains it
            return layout.sharding(("layers", "batch", "kv_length", "act_kv_heads", None), x.shape)
        axes = ("batch",) + (None,) * (len(x.shape) - 1) if x.shape else ()
        return layout.sharding(axes, x.shape)
    return lambda tree: jax.tree.map(one, tree)


def _replicated(layout: parallel.Layout, x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=layout.replicated)


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _required_bytes(message: str) -> int:
    """The HBM an out-of-memory compile asked for, from XLA's message (0 if it does not say)."""
    for pattern in (r"required for HLO temporaries \(([\d.]+)([KMGT]?)", r"Used ([\d.]+)([KMGT]?) of"):
        m = re.search(pattern, message)
        if m:
            return int(float(m.group(1)) * _UNITS[m.group(2)])
    return 0


@dataclasses.dataclass
class _Compiled:
    traced: object
    compiled: object | None  # None: the compiler ran out of HBM
    flops: float
    seconds: float
    arg_bytes: list[int]  # per argument: HBM per chip of the leaves the executable takes (unused ones are pruned)
    error: str = ""

    def outputs(self, fallback_shardings: Callable):
        """Results as ShapeDtypeStructs with shardings (the compiler's, or `fallback_shardings(out_info)`)."""
        if self.compiled is not None:
            return jax.tree.map(lambda o, s: jax.ShapeDtypeStruct(o.shape, o.dtype, sharding=s),
                                self.compiled.out_info, self.compiled.output_shardings)
        return inputs_lib.with_shardings(self.traced.out_info, fallback_shardings(self.traced.out_info))


def _position(args: tuple, arg) -> int:
    """Index of `arg` (by identity) in a step's argument tuple: which argument is the resident state."""
    return next(i for i, a in enumerate(args) if a is arg)


def _compile(jitted, args, *, layout: parallel.Layout, static=(), while_trips: int = 1) -> _Compiled:
    """Trace (under `layout`: mesh and rules), count FLOPs, lower and compile `jitted` on abstract `args`."""
    t0 = time.perf_counter()
    with layout.activate():  # activation constraints in the model code apply while tracing
        traced = jitted.trace(*args)
    flops = jaxpr_flops(traced.jaxpr, while_trips=while_trips)
    # jit drops arguments the program never reads (e.g. the frozen towers in the train step); they
    # are not in the executable's argument bytes, so they must not be subtracted from them either.
    jaxpr = traced.jaxpr.jaxpr
    used = {id(v) for eqn in jaxpr.eqns for v in eqn.invars} | {id(v) for v in jaxpr.outvars}
    flags = iter(id(v) in used for v in jaxpr.invars)
    arg_bytes = []
    for i, a in enumerate(args):
        if i in static:
            arg_bytes.append(0)
            continue
        arg_bytes.append(sum(_bytes_per_chip(leaf) for leaf in jax.tree.leaves(a) if next(flags)))
    try:
        compiled, error = traced.lower().compile(), ""
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        compiled, error = None, str(e).splitlines()[0]
    return _Compiled(traced, compiled, flops, time.perf_counter() - t0, arg_bytes, error)


def _tokenizer(config):
    """The tiny architecture takes its vocabulary from the tokenizer; the real ones need none."""
    return load_tokenizer(config.tokenizer or "tiny") if config.model.architecture == "tiny" else None


def _model_config(config):
    """The ThinkerConfig the check compiles (the config's architecture, as `build_run` builds it abstractly)."""
    return model_config(config, _tokenizer(config))


def check_fit(config, topology: str, *, prompt: inputs_lib.Prompt | None = None, hbm_bytes: int | None = None,
              steps=STEPS, devices=None, progress: Callable[[str], None] | None = None) -> FitReport:
    """Compile the run's steps of `config` for TPU slice `topology` (e.g. "v5p-8") and report HBM per chip.

    prompt: the per-prompt media/text (default: the data config's worst case); hbm_bytes: override
    the chip's HBM (what-if); devices: compile-only devices (default: libtpu's for the slice).
    """
    tpu = topology_lib.get_slice(topology)
    devices = devices if devices is not None else topology_lib.devices(topology)
    hbm = int(hbm_bytes or tpu.hbm_bytes)
    n_chips = len(devices)
    config_utils.validate(config, n_chips)
    # The run's pieces, abstract: layout (mesh and rules), model, its split, optimizer state and TrainState.
    pieces = build_run(config, _tokenizer(config), devices=devices, abstract=True)
    layout, mesh_shape, cfg, lora_cfg = pieces.layout, pieces.layout.shape, pieces.model_cfg, pieces.lora_cfg
    say = progress or (lambda _: None)

    # ---- shapes of one optimizer step ----
    prompt = prompt or inputs_lib.worst_case_prompt(config.data)
    length = inputs_lib.prompt_length(prompt, config.data)
    g, b = int(config.rollout.num_generations), int(config.batch_prompts)
    max_new = int(config.rollout.max_new_tokens)
    cache_length = sampler.check_cache_length(cfg, length, max_new)
    cache_dtype = jnp.dtype(config.rollout.cache_dtype or cfg.dtype)
    with_reference = config.grpo.beta > 0
    with_old = config.grpo.num_iterations > 1

    # ---- the run's resident buffers: policy, towers, optimizer, reference ----
    # The rollout samples from the whole model (graphdef_all); with LoRA the reference is the base (no copy).
    graphdef_all, policy_state = nnx.split(pieces.model)
    policy_state = abstract_state(policy_state, layout)
    trainable, frozen, opt_state = pieces.state.params, pieces.frozen, pieces.state.opt_state
    with_reference_copy = with_reference and lora_cfg is None
    ref_dtype = jnp.dtype(config.model.reference_dtype)
    reference = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, ref_dtype, sharding=x.sharding), trainable)
    resident = {"trainable": _bytes_per_chip(trainable), "frozen": _bytes_per_chip(frozen),
                "optimizer": _bytes_per_chip(opt_state),
                "reference": _bytes_per_chip(reference) if with_reference_copy else 0}
    params_live = resident["trainable"] + resident["frozen"] + resident["reference"]

    # ---- analytic arithmetic ----
    rows_shards = mesh_shape["data"] * mesh_shape["fsdp"]
    step_cfg = pieces.step_cfg
    model_inputs = inputs_lib.model_inputs(cfg, prompt, b, length)
    shapes = estimate_lib.Shapes(
        prompts=b, generations=g, prompt_length=length, max_new_tokens=max_new, grad_accum=int(config.optim.grad_accum),
        patches=model_inputs.vision.pixel_values.shape[0] if model_inputs.vision else 0,
        audio_chunks=model_inputs.audio.chunks.shape[0] if model_inputs.audio else 0,
        param_shards=mesh_shape["fsdp"] * mesh_shape["tp"], row_shards=rows_shards,
        with_reference=with_reference, cache_dtype=cache_dtype.name,
        reference_dtype=ref_dtype.name, prefix_share=step_cfg.prefix_share,
        lora_rank=lora_cfg.rank if lora_cfg else 0, lora_targets=lora_cfg.targets if lora_cfg else ())
    estimates = estimate_lib.estimate(cfg, shapes)

    reports: list[StepReport] = []

    def report(name, c: _Compiled, resident_args: tuple[int, ...], extra_activations: int, traffic: float,
               compute_chips: int = n_chips):
        """resident_args: which arguments are the run's resident buffers (counted as params / optimizer);
        compute_chips: over how many chips the FLOPs spread (1: every chip does all of them).

        The step's own footprint is XLA's peak (its heap simulation: temporaries reuse the memory of
        donated or dead buffers) when it reports one, else arguments + outputs - aliases + temps.
        """
        resident_in_args = sum(c.arg_bytes[i] for i in resident_args)
        if c.compiled is None:
            io, temps, code = sum(c.arg_bytes), _required_bytes(c.error), 0
            xla = {"error": c.error}
        else:
            m = c.compiled.memory_analysis()
            xla = {k: int(getattr(m, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                                   "alias_size_in_bytes", "temp_size_in_bytes",
                                                   "generated_code_size_in_bytes", "peak_memory_in_bytes")
                   if hasattr(m, k)}
            io = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
            peak = xla.get("peak_memory_in_bytes", 0)
            temps = max(peak - io, 0) if peak > 0 else m.temp_size_in_bytes
            code = m.generated_code_size_in_bytes
        reports.append(StepReport(
            name=name, params=params_live, optimizer=resident["optimizer"],
            activations=int(io - resident_in_args + extra_activations), temporaries=int(temps), code=int(code),
            hbm_bytes_per_chip=hbm, flops=c.flops, compute_seconds=c.flops / (compute_chips * tpu.chip.peak_flops),
            memory_seconds=traffic / tpu.chip.hbm_bandwidth, estimate=estimates[name], xla=xla,
            compile_seconds=c.seconds, error=c.error))
        say(f"{name}: {reports[-1].bytes_per_chip / 2**30:.1f} GiB per chip"
            + (" (compiler out of memory)" if c.error else "") + f", compiled in {c.seconds:.0f} s")

    # ---- rollout: prefill, then decode from its outputs ----
    # The very steps `generate` jits, with its static arguments (one end-of-sequence id: any id traces alike).
    sampling = Sampling(float(config.rollout.temperature), int(config.rollout.top_k), float(config.rollout.top_p))
    rollout_steps = sampler.build_rollout_steps(
        graphdef_all, cfg, num_prompts=b, num_samples=g, max_new_tokens=max_new, sampling=sampling,
        eos_token_ids=(0,), cache_dtype=cache_dtype, layout=layout, has_adapters=lora_cfg is not None)
    inputs = inputs_lib.with_shardings(model_inputs, rollout_steps.input_shardings(model_inputs))
    inputs_bytes = _bytes_per_chip(inputs)
    policy_bytes = _bytes_per_chip(policy_state)
    want = set(steps)
    if want & {"prefill", "decode"}:
        say("prefill: compiling")
        per_pass = rollout_steps.prompts_per_pass
        pre_args = rollout_steps.prefill_args(policy_state, inputs)
        pre = _compile(rollout_steps.prefill, pre_args, layout=layout, static=rollout_steps.prefill_static)
        outputs = pre.outputs(_row_shardings(layout))
        cache, logits, kv_valid, next_pos, embeds = outputs
        if "prefill" in want:
            # Prompts that do not divide over the chips are prefilled on every chip: an upper bound of 1 chip's time.
            report("prefill", pre, (_position(pre_args, policy_state),), 0, traffic=sum(pre.arg_bytes) + _bytes_per_chip(outputs),
                   compute_chips=n_chips if per_pass == b else 1)
        if "decode" in want:
            say("decode: compiling")
            rng = _replicated(layout, jax.eval_shape(lambda: jax.random.key(0)))
            pad = _replicated(layout, jax.ShapeDtypeStruct((), jnp.int32))
            dec_args = rollout_steps.decode_args(policy_state, None, outputs, rng, pad)
            dec = _compile(rollout_steps.decode, dec_args, layout=layout, static=rollout_steps.decode_static,
                           while_trips=max_new)
            # Each new token reads the text weights, the prompts' cache and the completions' own cache once.
            own = jax.eval_shape(lambda: init_cache(cfg.text, b * g, max_new, cache_dtype))
            own = inputs_lib.with_shardings(own, _row_shardings(layout)(own))
            per_token = policy_bytes - resident["frozen"] + _bytes_per_chip(cache) + _bytes_per_chip(own)
            report("decode", dec, (_position(dec_args, policy_state),), inputs_bytes + _bytes_per_chip(embeds),
                   traffic=per_token * max_new)

    # ---- learner: the donated train step and the reference pass ----
    rows = b * g
    batch = inputs_lib.grpo_batch(cfg, rows, length, max_new, with_reference=with_reference, with_old_logp=with_old)
    batch = inputs_lib.with_shardings(batch, row_shardings(batch, layout))
    if "train" in want:
        say("train: compiling")
        state = pieces.state
        tr = _compile(jit_train_step(pieces.graphdef, step_cfg, pieces.optimizer, parallel.shardings_of(state), layout),
                      (state, frozen, batch), layout=layout)
        # Forward, remat forward and backward read the weights per micro-batch; AdamW reads and writes its state.
        traffic = 3 * step_cfg.grad_accum * (resident["trainable"] + resident["frozen"]) \
            + 2 * (resident["trainable"] + resident["optimizer"]) + _bytes_per_chip(batch)
        report("train", tr, (0, 1), 0, traffic=traffic)
    if "reference" in want and with_reference:
        say("reference: compiling")
        if lora_cfg is None:
            ref_args, ref_graphdef = (reference, frozen, batch.seqs), pieces.graphdef
        else:  # LoRA: the base graph on the base weights (every parameter but the adapters)
            base_frozen = abstract_state(lora.base_state(nnx.state(pieces.model)), layout)
            ref_args, ref_graphdef = (base_frozen, nnx.State({}), batch.seqs), lora.base_graphdef(pieces.model)
        ref = _compile(jit_logprob_fn(ref_graphdef, step_cfg, layout), ref_args, layout=layout)
        # The GRPO batch's other fields stay live next to the sequences.
        others = _bytes_per_chip(batch) - _bytes_per_chip(batch.seqs)
        report("reference", ref, (0, 1), others,
               traffic=sum(ref.arg_bytes) + _bytes_per_chip(ref.outputs(_row_shardings(layout))))

    counts = estimate_lib.parameter_counts(cfg, shapes.lora_rank, shapes.lora_targets)
    return FitReport(
        topology=tpu.name, chips=n_chips, mesh=mesh_shape, hbm_bytes_per_chip=hbm,
        peak_flops_per_chip=tpu.chip.peak_flops, hbm_bandwidth_per_chip=tpu.chip.hbm_bandwidth,
        shapes={"prompts": b, "generations": g, "rows": rows, "prompt_length": length,
                "prompt_tokens": prompt.tokens(cfg.vision.spatial_merge_size), "max_new_tokens": max_new,
                "cache_length": cache_length, "grad_accum": int(config.optim.grad_accum),
                "video_grid": list(prompt.video_grid or ()), "audio_frames": prompt.audio_frames,
                "text_tokens": prompt.text_tokens, "remat": config.model.remat,
                "attention_query_chunk": int(config.model.attention_query_chunk)},
        parameters=counts, steps=reports)
