"""Helpers for the ml_collections config files under configs/ (big_vision style).

    --config configs/stage4_people_focus.py:model=7b,num_generations=8
    --config.optim.learning_rate=1e-6

`parse_arg("model=7b,runlocal", model="3b", runlocal=False)` reads the variant string with typed
defaults; unknown keys are an error. `validate(config, num_devices)` checks the values that must
agree with each other before anything is built.

Where defaults live (one rule): `base()` assembles every section of a training config. A section
whose package has a config module of its own and sits in this module's layer or below keeps its
defaults there, next to the code that reads it: `config.data` in `omni_jax/data/config.py`
(`data_defaults`, with its "tiny" variant), `config.rewards` in `omni_jax/rewards/config.py`
(`reward_defaults`). Every other section (the run's top-level fields, `model`, `rollout`, `grpo`,
`optim`, `warmstart`, `mesh`) is read by the loops above this layer, which this module may not
import, so its defaults are written in `base()` itself. configs/*.py start from `base()` and only
change values (or take a section's variant, e.g. `data_defaults("tiny")`); they never add fields.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from omni_jax import parallel
from omni_jax.data.config import data_defaults, problems as data_problems
from omni_jax.rewards.config import reward_defaults


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Variant string "k=v,k2=v2,flag" → ConfigDict with the types of `defaults`."""
    out = ml_collections.ConfigDict(defaults)
    if not arg:
        return out
    for item in arg.split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"unknown config variant key {key!r}; known: {sorted(defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            out[key] = value.lower() in ("", "1", "true", "yes") if value else True
        elif isinstance(default, int):
            out[key] = int(value)
        elif isinstance(default, float):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def mesh_shape(config, num_devices: int) -> dict[str, int]:
    """The (data, fsdp, tp) sizes with a -1 resolved against `num_devices`; ValueError if they do not fit."""
    shape = {"data": int(config.mesh.data), "fsdp": int(config.mesh.fsdp), "tp": int(config.mesh.tp)}
    if list(shape.values()).count(-1) > 1 or any(v < 1 and v != -1 for v in shape.values()):
        raise ValueError(f"mesh sizes must be positive, at most one -1: {shape}")
    known = 1
    for v in shape.values():
        known *= v if v != -1 else 1
    if -1 in shape.values():
        if num_devices % known:
            raise ValueError(f"mesh {shape} does not divide the {num_devices} available devices")
        shape = {k: (num_devices // known if v == -1 else v) for k, v in shape.items()}
    elif known != num_devices:
        raise ValueError(f"mesh {shape} needs {known} devices; {num_devices} are available")
    return shape


def mesh_rules(config) -> tuple:
    """The run's logical-axis rules, from `config.mesh.rules` (logical name → a mesh axis, a tuple
    of mesh axes, or None: replicated), in `parallel.DEFAULT_RULES`' order. `layout(config)` pairs
    them with the run's mesh; `config.mesh.rules` defaults to DEFAULT_RULES."""
    rules = config.mesh.get("rules")
    if rules is None:
        return parallel.DEFAULT_RULES

    def axes(v):
        return tuple(v) if isinstance(v, (list, tuple)) else v

    return tuple((name, axes(rules[name])) for name, _ in parallel.DEFAULT_RULES if name in rules)


def layout(config, devices=None) -> parallel.Layout:
    """The run's `parallel.Layout`: a mesh of `config.mesh`'s sizes over `devices` (default: every
    device of the job; a -1 size takes the rest) and the rules of `mesh_rules(config)`."""
    shape = mesh_shape(config, len(devices) if devices is not None else jax.device_count())
    return parallel.Layout(parallel.make_mesh(shape, devices=devices), mesh_rules(config))


def _rules_problems(config) -> list[str]:
    rules = config.mesh.get("rules")
    if rules is None:
        return []
    names = [name for name, _ in parallel.DEFAULT_RULES]
    problems = [f"mesh.rules.{k} is not a logical axis; known: {', '.join(names)}" for k in rules if k not in names]
    problems += [f"mesh.rules needs a rule for {k}" for k in names if k not in rules]
    for name, value in mesh_rules(config):
        targets = value if isinstance(value, tuple) else (value,) if value is not None else ()
        if any(t not in parallel.MESH_AXES for t in targets):
            problems.append(f"mesh.rules.{name} = {value!r}: use None, one of {parallel.MESH_AXES} or a tuple of them")
    return problems


def apply_cpu_devices(config) -> int | None:
    """Set JAX's CPU device count from `config.mesh.cpu_devices`; call before JAX starts a backend.

    Returns the count set, or None (0 in the config, or XLA_FLAGS already forces a count).
    """
    n = int(config.mesh.get("cpu_devices", 0) or 0)
    if n < 0:
        raise ValueError(f"mesh.cpu_devices must be >= 0, got {n}")
    if n == 0 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    jax.config.update("jax_num_cpu_devices", n)
    return n


# Keys that configs once carried and that no longer exist, with why (an old config gets told).
REMOVED_KEYS = {
    "log_every_steps": "metrics are written every step",
    "model.train_towers": ("the vision and audio towers are always frozen (the GRPO update reuses the rollout's "
                           "encoder outputs, so tower weights would get no gradient)"),
}


def validate(config, num_devices: int) -> None:
    """Raise ValueError naming each inconsistent setting."""
    problems = _rules_problems(config)
    g = config.rollout.num_generations
    rows = config.batch_prompts * g
    if g < 1:
        problems.append(f"rollout.num_generations must be >= 1 (got {g})")
    if config.batch_prompts < 1:
        problems.append(f"batch_prompts must be >= 1 (got {config.batch_prompts})")
    accum = config.optim.grad_accum
    if accum < 1 or rows % accum:
        problems.append(f"batch_prompts × num_generations = {rows} rows must split into optim.grad_accum = "
                        f"{accum} equal micro-batches")
    try:
        shape = mesh_shape(config, num_devices)
        shards = shape["data"] * shape["fsdp"]
        if accum >= 1 and (rows // accum) % shards:
            problems.append(f"a micro-batch of {rows // accum} rows does not divide over data × fsdp = {shards} "
                            "devices; change batch_prompts, num_generations, grad_accum or the mesh")
    except ValueError as e:
        problems.append(str(e))
    if not 0 < config.rollout.top_p <= 1:
        problems.append(f"rollout.top_p must be in (0, 1] (got {config.rollout.top_p})")
    if config.rollout.temperature < 0:
        problems.append("rollout.temperature must be >= 0")
    if config.grpo.scale_rewards not in ("group", "batch", "none"):
        problems.append("grpo.scale_rewards must be group|batch|none")
    if config.grpo.num_iterations < 1:
        problems.append("grpo.num_iterations must be >= 1")
    if config.model.layer_loop not in ("scan", "unrolled"):
        problems.append(f"model.layer_loop must be scan|unrolled (got {config.model.layer_loop!r})")
    if config.grpo.old_logprobs not in ("sampler", "recompute"):
        problems.append("grpo.old_logprobs must be 'sampler' or 'recompute'")
    if config.get("max_consecutive_skipped_updates", 0) < 0:
        problems.append("max_consecutive_skipped_updates must be >= 0 (0: never stop)")
    for key, why in REMOVED_KEYS.items():
        section, _, leaf = key.rpartition(".")
        node = config.get(section) if section else config
        if node is not None and leaf in node:
            problems.append(f"{key} is not a setting: {why}; delete it from the config")
    if "eval" in config:
        if config.eval.every_steps < 0 or config.eval.size < 1 or config.eval.batch_size < 1:
            problems.append("eval.every_steps must be >= 0 and eval.size, eval.batch_size >= 1")
        if config.eval.split not in ("synthetic", "intentbench", "daily_omni", "worldsense"):
            problems.append(f"eval.split must be synthetic|intentbench|daily_omni|worldsense (got {config.eval.split!r})")
        elif config.eval.every_steps and config.eval.split != "synthetic" and not config.eval.data_dir:
            problems.append(f"eval.split={config.eval.split!r} needs eval.data_dir (the benchmark's ROOT)")
    if config.total_steps < 1 or config.checkpoint_every_steps < 1:
        problems.append("total_steps and checkpoint_every_steps must be >= 1")
    if "data" in config:  # the data layer owns its fields
        problems.extend(data_problems(config.data))
    if problems:
        raise ValueError("invalid config:\n  " + "\n  ".join(problems))


def base() -> ml_collections.ConfigDict:
    """Every field a training config has, with neutral defaults; configs/*.py override them."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 100
    c.checkpoint_every_steps = 50
    c.keep_checkpoints = 3
    c.sample_every_steps = 10  # print sampled completions as text every this many steps
    # Stop with an error after this many updates in a row skipped for a non-finite loss or gradient
    # (0: never stop); the metrics count skipped updates in `skipped_updates`.
    c.max_consecutive_skipped_updates = 20
    c.batch_prompts = 8  # questions per optimizer step (global); rows = batch_prompts × num_generations
    c.tokenizer = "tiny"  # "tiny" (shipped) or a local HF checkpoint directory

    c.model = ml_collections.ConfigDict()
    c.model.init = "random"  # "random", or a local / gs:// HF directory or omni_jax checkpoint
    c.model.architecture = "tiny"  # "tiny", "3b", "7b", or a path to an HF config.json (with init=random)
    c.model.dtype = "float32"  # compute dtype
    c.model.param_dtype = "float32"  # master weights
    c.model.reference_dtype = "bfloat16"  # the frozen reference copy
    c.model.remat = "none"  # none | full | dots
    c.model.attention_query_chunk = 2048
    c.model.attention_key_chunk = 0  # > 0: flash attention, keys in blocks of this size (long prompts)
    c.model.layer_loop = "scan"  # scan | unrolled (faster on CPU; see omni_jax.model.config)

    c.rollout = ml_collections.ConfigDict()
    c.rollout.num_generations = 8
    c.rollout.max_new_tokens = 1024
    c.rollout.temperature = 0.9
    c.rollout.top_p = 1.0
    c.rollout.top_k = 50
    c.rollout.cache_dtype = ""  # "" = the compute dtype

    c.grpo = ml_collections.ConfigDict()
    c.grpo.scale_rewards = "none"  # HumanOmniV2 runs with --scale_rewards false
    c.grpo.epsilon_low = 0.2
    c.grpo.epsilon_high = 0.2
    c.grpo.beta = 0.04
    c.grpo.kl_estimator = "k3"
    c.grpo.beta_decay = False
    c.grpo.aggregation = "seq-mean-token-mean"
    c.grpo.num_iterations = 1
    c.grpo.old_logprobs = "sampler"  # with num_iterations > 1: "sampler" or "recompute"
    c.grpo.logits_chunk = 256
    # Candidates of one question share one pass of its prompt in the learner's and reference's
    # log-prob passes (the prompt's keys and values feed every candidate); False: one per row.
    c.grpo.prefix_share = True

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 1e-6
    c.optim.warmup_steps = 0
    c.optim.schedule = "linear"
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.max_grad_norm = 1.0
    c.optim.grad_accum = 1

    # LoRA (omni_jax.model.lora): rank > 0 trains low-rank adapters on the text decoder's
    # projections only; the base stays frozen and is the reference policy (no copy).
    c.lora = ml_collections.ConfigDict()
    c.lora.rank = 0  # 0: full fine-tuning
    c.lora.alpha = 128.0
    c.lora.dropout = 0.0
    c.lora.targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"

    c.warmstart = ml_collections.ConfigDict()
    c.warmstart.steps = 0  # supervised steps on synthetic demonstrations before GRPO (0 = off)
    c.warmstart.learning_rate = 1e-3
    c.warmstart.batch_prompts = 16
    # With LoRA: True, the warm-start trains the adapters (merged into the base before GRPO); False,
    # it trains the text decoder's weights as a run without LoRA does (a random tiny model does not
    # learn the answer form through adapters alone), and GRPO then trains fresh adapters on it.
    c.warmstart.lora = True

    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tp": 1})
    # > 0: run the CPU backend as this many JAX devices (one per core is the use), so the mesh
    # splits the batch over the cores. Only the CPU platform is affected; XLA_FLAGS'
    # --xla_force_host_platform_device_count, when set, wins. 0: JAX's default (1 CPU device).
    c.mesh.cpu_devices = 0
    # Logical axis → mesh axis (a tuple of them, or None: replicated); see omni_jax.parallel. The
    # trainer, the SFT loop and the fit check read them through `layout(config)`.
    c.mesh.rules = ml_collections.ConfigDict(dict(parallel.DEFAULT_RULES))
    c.data = data_defaults()
    c.rewards = reward_defaults()

    # A small greedy evaluation during training (omni_jax.eval), logged as eval/accuracy,
    # eval/people_focus/... in metrics.jsonl and TensorBoard. every_steps 0: off.
    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 0
    c.eval.split = "synthetic"  # "synthetic" (held-out generated questions) | intentbench | daily_omni | worldsense
    c.eval.data_dir = ""  # ROOT of HumanOmniV2's benchmark layout (local or gs://) for the benchmark splits
    c.eval.size = 16  # the first `size` questions of the split
    c.eval.batch_size = 8
    c.eval.max_new_tokens = 0  # 0: rollout.max_new_tokens
    c.eval.seed = 1000  # synthetic questions drawn with this seed (training's synthetic data uses data.synthetic.seed)
    return c


def sft_defaults() -> ml_collections.ConfigDict:
    """The `sft` block of an SFT config (`python -m omni_jax.sft`)."""
    c = ml_collections.ConfigDict()
    c.target_field = "auto"  # auto (solution, else response) | solution | response
    c.max_completion_tokens = 1024  # longer targets are cut (counted in sft/truncated_rows)
    c.logits_chunk = 256
    return c
