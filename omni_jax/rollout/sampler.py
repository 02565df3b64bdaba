"""`generate`: encode + prefill each prompt once, then decode N candidates that share its KV cache.

    out = generate(model, processor_inputs, num_samples=8, max_new_tokens=1024, temperature=0.9,
                   top_k=50, top_p=1.0, seed=0, eos_token_ids=[tokenizer.eos_token_id])
    out.tokens: int32[B·N, M]; out.logprobs: float32[B·N, M]; out.mask: bool[B·N, M]; out.lengths: int32[B·N]

Rows are grouped by prompt: rows i·N … i·N+N-1 are the candidates of prompt i. The decode loop is
one jitted `lax.while_loop` with static shapes that stops when every row has emitted an EOS or
the budget is spent. The completion mask runs up to and including the first EOS.

The prompt's keys and values are kept once per prompt and read by its N candidates; each
candidate has a cache of its own completion only. With 8 candidates of a 28k-token video prompt
and 1k-token completions that is ~8× less cache memory and per-token cache traffic than a copy
per candidate. (Only when the prompts do not divide over the mesh's batch shards, e.g. 8 prompts
on 16 chips, is the prompt cache copied per candidate: a single copy would sit whole on every chip.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from omni_jax import parallel
from omni_jax.kernels import cpu_decode
from omni_jax.kernels import cpu_gemv as _cpu_gemv
from omni_jax.model import lora
from omni_jax.model.inputs import ModelInputs, next_position_ids, prepare_inputs
from omni_jax.model.text import causal_mask, init_cache
from omni_jax.model.thinker import Thinker
from omni_jax.rollout import backends
from omni_jax.rollout.sampling import Sampling


@struct.dataclass
class RolloutOutput:
    """What `generate` returns: the sampled completions of every prompt's N candidates (rows i·N …
    i·N+N-1 for prompt i), their log-probabilities, masks and lengths.
    """
    tokens: jax.Array  # int32[B·N, M], pad after the first EOS
    logprobs: jax.Array  # float32[B·N, M], log softmax(logits / T) of each sampled token, 0 where masked
    mask: jax.Array  # bool[B·N, M], up to and including the first EOS
    lengths: jax.Array  # int32[B·N]
    prompt_embeds: jax.Array | None = None  # [B, T, D] encoder-merged prompt embeddings (for reuse)
    logits: jax.Array | None = None  # float32[B·N, M, V] when return_logits (tests, debugging)


@struct.dataclass
class _DecodeState:
    step: jax.Array
    tokens: jax.Array
    logprobs: jax.Array
    done: jax.Array
    logits: jax.Array  # [B·N, V] of the next token
    cache: dict  # the completions' own keys and values [L, B·N, M, K, H]
    kv_valid: jax.Array  # bool[B·N, M]: completion positions written so far
    rng: jax.Array
    all_logits: jax.Array | None


def _batch_spec(ndim: int, batch_axis: int = 0):
    axes = [None] * ndim
    axes[batch_axis] = "batch"
    return tuple(axes)


def _input_logical_axes(inputs: ModelInputs):
    """Logical axes for each ModelInputs leaf: batch-major arrays over 'batch', the pixels over the
    vision encoder's patch axis, the rest (small index arrays, mel chunks) replicated."""
    def spec(path, x):
        names = [getattr(p, "name", None) for p in path]
        if names[0] in ("input_ids", "attention_mask", "feature_index", "rope_deltas"):
            return _batch_spec(np.ndim(x))
        if names[0] == "position_ids":
            return _batch_spec(np.ndim(x), 1)
        if names == ["vision", "pixel_values"]:
            return ("vision_tokens", None)
        return (None,) * np.ndim(x)
    return jax.tree_util.tree_map_with_path(spec, inputs)


def input_shardings(inputs: ModelInputs, layout: parallel.Layout):
    """NamedSharding on `layout` for every leaf of `inputs` (arrays or ShapeDtypeStructs), as `generate` places them."""
    return jax.tree.map(lambda x, axes: layout.sharding(axes, np.shape(x)), inputs,
                        _input_logical_axes(inputs),
                        is_leaf=lambda x: isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x))


def batch_shards(layout: parallel.Layout | None) -> int:
    """Over how many devices the prompts are split: `layout.batch_shards`, the mesh axes of the
    logical `batch` axis (data × fsdp under the default rules); 1 without a layout. A batch of a
    multiple of it is prefilled in one pass."""
    return 1 if layout is None else layout.batch_shards


def prompts_per_prefill(num_prompts: int, layout: parallel.Layout | None) -> int:
    """How many prompts one prefill pass runs: all of them when they split evenly over the batch
    mesh axes (`batch_shards`), else one at a time. A batch that does not divide is replicated on
    every chip (8 prompts on 16 chips), and so are its activations: 28k-token prompts then need
    their whole decoder working set on each chip unless they go through one by one."""
    return num_prompts if num_prompts % batch_shards(layout) == 0 else 1


def prefill_plan(num_prompts: int, layout: parallel.Layout | None) -> tuple[int, bool]:
    """(prompts per prefill pass, whether the prompts' cache is kept once for their candidates).

    Prompts that do not divide over the batch mesh axes go through one at a time and their cache
    is copied per candidate (the candidates divide): one shared copy would sit whole on every chip.
    """
    per_pass = prompts_per_prefill(num_prompts, layout)
    return per_pass, per_pass == num_prompts


# The arguments the two steps are traced for (static: hashable Python values); `RolloutSteps`
# builds the argument tuples in this order for `generate` and for the fit check alike.
PREFILL_STATIC = (0, 3, 4, 5, 6)  # graphdef, cache_dtype, num_samples, prompts_per_pass, share_cache
# graphdef, sampling, max_new_tokens, eos, return_logits, unroll_layers, cpu_decode_kernel
DECODE_STATIC = (0, 1, 2, 3, 4, 5, 6)


@functools.partial(jax.jit, static_argnums=PREFILL_STATIC)
def _prefill(graphdef, state, inputs: ModelInputs, cache_dtype, num_samples: int, prompts_per_pass: int,
             share_cache: bool = True):
    """Encode + prefill once per prompt (`prompts_per_pass` prompts at a time).

    Returns (the prompts' cache [L, B, T, K, H], next-token logits [B·N, V] and next position id
    [B·N] per candidate, the prompts' valid keys bool[B, T], prompt embeddings [B, T, D]).
    share_cache=False: the cache and valid keys are copied per candidate ([L, B·N, T, K, H],
    [B·N, T]), for meshes the prompts do not divide over but the candidates do (8 prompts on 16
    chips: one shared copy would sit whole on every chip, a copy per candidate splits).
    """
    model: Thinker = nnx.merge(graphdef, state)
    x = model.embed(inputs)
    b, t = inputs.input_ids.shape
    kv_valid = inputs.attention_mask.astype(bool)
    q_index = jnp.broadcast_to(jnp.arange(t), (b, t))

    def prefill(x, position_ids, kv_valid, q_index):
        cache = init_cache(model.cfg.text, x.shape[0], t, cache_dtype)
        hidden, cache = model.hidden_states(x, position_ids, causal_mask(kv_valid, q_index), cache, 0)
        return model.logits(hidden[:, -1]), cache  # left padding: the last column is every row's last token

    if prompts_per_pass >= b:
        logits, cache = prefill(x, inputs.position_ids, kv_valid, q_index)
    else:
        n = b // prompts_per_pass

        def groups(a, axis=0):  # [.., B, ..] → [n, .., B/n, ..], prompt i in group i // (B/n)
            a = jnp.moveaxis(a, axis, 0)
            return jnp.moveaxis(a.reshape(n, prompts_per_pass, *a.shape[1:]), 1, axis + 1)

        logits, cache = jax.lax.map(lambda a: prefill(*a), (groups(x), groups(inputs.position_ids, 1),
                                                            groups(kv_valid), groups(q_index)))
        logits = logits.reshape(b, -1)
        cache = {k: jnp.moveaxis(v, 0, 1).reshape(v.shape[1], b, *v.shape[3:]) for k, v in cache.items()}
    next_pos = next_position_ids(inputs.position_ids, inputs.attention_mask)

    def rep(a, axis=0):
        return jnp.repeat(a, num_samples, axis=axis)

    if not share_cache:
        cache, kv_valid = {k: rep(v, 1) for k, v in cache.items()}, rep(kv_valid)
    cache = {k: parallel.constrain(v, ("layers", "batch", "kv_length", "act_kv_heads", None))
             for k, v in cache.items()}
    return cache, rep(logits), kv_valid, rep(next_pos), x


@functools.partial(jax.jit, static_argnums=0)
def _pack_decoder(graphdef, state):
    """The decoder's weights packed for the CPU decode kernel: (packed layer stacks, packed head)."""
    return cpu_decode.pack(nnx.merge(graphdef, state))


_LAST_PACKING = cpu_decode.LastPacking()


def packed_decoder(graphdef, state):
    """`_pack_decoder` through the process's `cpu_decode.LastPacking` (one packed copy at most)."""
    return _LAST_PACKING.get(graphdef, state, _pack_decoder)


@functools.partial(jax.jit, static_argnums=DECODE_STATIC)
def _decode(graphdef, sampling: Sampling, max_new_tokens: int, eos: tuple[int, ...], return_logits: bool,
            unroll_layers: bool, cpu_decode_kernel: bool, state, packed, prompt_cache, logits, prompt_valid,
            next_pos, rng, pad_id):
    """Decode from `_prefill`'s outputs: each run of candidates reads its prompt's cache (shared or
    copied per candidate) and writes a cache of its own completion. cpu_decode_kernel: decode by the
    CPU kernel's backend (`omni_jax.rollout.backends`) on `packed` (from `packed_decoder`; None
    otherwise)."""
    model: Thinker = nnx.merge(graphdef, state)
    rows = logits.shape[0]
    dtype = prompt_cache["k"].dtype
    cache = {k: parallel.constrain(v, ("layers", "batch", "kv_length", "act_kv_heads", None))
             for k, v in init_cache(model.cfg.text, rows, max_new_tokens, dtype).items()}
    decoder = backends.backend(model, cpu_decode_kernel=cpu_decode_kernel, unroll_layers=unroll_layers, packed=packed)
    cache, prompt_cache = decoder.caches(cache, prompt_cache)
    shared = (prompt_cache["k"], prompt_cache["v"], prompt_valid)
    eos_ids = jnp.asarray(eos if eos else (-1,), jnp.int32)

    def cond(s: _DecodeState):
        return (s.step < max_new_tokens) & ~jnp.all(s.done)

    def body(s: _DecodeState):
        tok = sampling.next_tokens(s.logits, jax.random.fold_in(s.rng, s.step))
        lp = sampling.logprobs(s.logits, tok)
        tok = jnp.where(s.done, pad_id, tok)
        lp = jnp.where(s.done, 0.0, lp)
        tokens = s.tokens.at[:, s.step].set(tok)
        logprobs = s.logprobs.at[:, s.step].set(lp)
        all_logits = s.all_logits.at[:, s.step].set(s.logits) if return_logits else None
        done = s.done | jnp.isin(tok, eos_ids)
        # Feed the sampled token: a text token, so its three TMRoPE rows are equal. It goes to
        # completion position `step` of the rows' own cache, after the shared prompt.
        kv_valid = s.kv_valid.at[:, s.step].set(True)
        hidden, cache = decoder.step(tok, next_pos + s.step, kv_valid, shared, s.cache, s.step)
        return _DecodeState(s.step + 1, tokens, logprobs, done, decoder.logits(hidden), cache, kv_valid,
                            s.rng, all_logits)

    init = _DecodeState(
        step=jnp.int32(0),
        tokens=jnp.full((rows, max_new_tokens), pad_id, jnp.int32),
        logprobs=jnp.zeros((rows, max_new_tokens), jnp.float32),
        done=jnp.zeros((rows,), bool),
        logits=logits, cache=cache, kv_valid=jnp.zeros((rows, max_new_tokens), bool), rng=rng,
        all_logits=jnp.zeros((rows, max_new_tokens, logits.shape[-1]), jnp.float32) if return_logits else None,
    )
    final = jax.lax.while_loop(cond, body, init)
    is_eos = jnp.isin(final.tokens, eos_ids)
    first_eos = jnp.where(is_eos.any(-1), jnp.argmax(is_eos, axis=-1) + 1, max_new_tokens)
    mask = jnp.arange(max_new_tokens)[None, :] < first_eos[:, None]
    return (final.tokens, jnp.where(mask, final.logprobs, 0.0), mask, first_eos.astype(jnp.int32),
            final.all_logits)


def check_cache_length(cfg, prompt_length: int, max_new_tokens: int, max_cache_length: int | None = None) -> int:
    """The KV cache length prompt + completion; ValueError when it exceeds the model's positions."""
    limit = max_cache_length or cfg.text.max_position_embeddings
    if prompt_length + max_new_tokens > limit:
        raise ValueError(
            f"prompt of {prompt_length} tokens + max_new_tokens {max_new_tokens} does not fit the cache of "
            f"{limit} positions; shorten the prompt (fewer frames / pixels, a smaller prompt bucket) or "
            "max_new_tokens"
        )
    return prompt_length + max_new_tokens


@dataclasses.dataclass(frozen=True)
class RolloutSteps:
    """The rollout's two jitted steps and every static argument they are traced for.

        steps = build_rollout_steps(graphdef, cfg, num_prompts=B, num_samples=N, ...)
        prefilled = steps.prefill(*steps.prefill_args(state, inputs))
        out = steps.decode(*steps.decode_args(state, packed, prefilled, rng, pad_id))

    `generate` runs them; the fit check (`omni_jax.aot.fit`) lowers the same functions on the same
    argument tuples (abstract arrays), static positions `prefill_static` / `decode_static`. Inputs
    are placed by `input_shardings` (None without a layout: one device); the prefill constrains the
    cache it returns to ("layers", "batch", "kv_length", "act_kv_heads"). Nothing is donated.
    """

    graphdef: Any
    cache_dtype: Any
    num_samples: int
    prompts_per_pass: int
    share_cache: bool
    sampling: Sampling
    max_new_tokens: int
    eos: tuple[int, ...]
    return_logits: bool
    unroll_layers: bool
    cpu_decode_kernel: bool
    layout: parallel.Layout | None = None

    prefill_static = PREFILL_STATIC
    decode_static = DECODE_STATIC

    @property
    def prefill(self):
        """The jitted prefill (`_prefill`, looked up when called)."""
        return _prefill

    @property
    def decode(self):
        """The jitted decode loop (`_decode`, looked up when called)."""
        return _decode

    def prefill_args(self, state, inputs: ModelInputs) -> tuple:
        return (self.graphdef, state, inputs, self.cache_dtype, self.num_samples, self.prompts_per_pass,
                self.share_cache)

    def decode_args(self, state, packed, prefilled: tuple, rng, pad_id) -> tuple:
        """`prefilled`: the prefill's outputs (cache, logits, valid keys, next positions, embeddings)."""
        cache, logits, kv_valid, next_pos, _ = prefilled
        return (self.graphdef, self.sampling, self.max_new_tokens, self.eos, self.return_logits,
                self.unroll_layers, self.cpu_decode_kernel, state, packed, cache, logits, kv_valid, next_pos, rng,
                pad_id)

    def input_shardings(self, inputs: ModelInputs):
        """Where the prompts' inputs go (None: the default device)."""
        return input_shardings(inputs, self.layout) if self.layout is not None else None


def build_rollout_steps(graphdef, cfg, *, num_prompts: int, num_samples: int, max_new_tokens: int,
                        sampling: Sampling, eos_token_ids: Sequence[int] = (), cache_dtype=None,
                        layout: parallel.Layout | None = None, devices=None,
                        return_logits: bool = False, unroll_layers: bool | None = None,
                        cpu_decode_kernel: bool | None = None, has_adapters: bool = False) -> RolloutSteps:
    """The prefill and decode steps for `num_prompts` prompts of a model (`graphdef`, config `cfg`).

    layout: the mesh and rules the inputs and cache are sharded by (None: one device).
    devices: where they run (default: the layout's mesh's, else the first device); they decide the
    defaults of unroll_layers and cpu_decode_kernel (see `generate`); has_adapters: the model
    carries LoRA adapters (decoded unmerged, by XLA's ops). ValueError when cpu_decode_kernel=True
    cannot run here.
    """
    if devices is None:
        devices = list(layout.mesh.devices.flat) if layout is not None else [jax.devices()[0]]
    devices = list(devices)
    if unroll_layers is None:
        unroll_layers = cfg.layer_loop == "unrolled" or all(d.platform == "cpu" for d in devices)
    # Where the fused decode layer cannot run: its MLP is SwiGLU (silu), no adapters (LoRA decodes
    # unmerged: base matmul + low-rank term), and the kernel's own rules.
    why = (f"the fused decode layer computes a SwiGLU (silu) MLP, this model's hidden_act is "
           f"{cfg.text.hidden_act!r}" if cfg.text.hidden_act != "silu" else
           "the model has LoRA adapters, which the fused decode layer does not compute" if has_adapters
           else _cpu_gemv.why_not(devices))
    if cpu_decode_kernel is None:
        cpu_decode_kernel = why is None and _cpu_gemv.usable(devices, cfg.dtype)
    elif cpu_decode_kernel and why:
        raise ValueError(f"cpu_decode_kernel=True: {why}")
    per_pass, share_cache = prefill_plan(int(num_prompts), layout)
    return RolloutSteps(
        graphdef=graphdef, cache_dtype=jnp.dtype(cache_dtype or cfg.dtype), num_samples=int(num_samples),
        prompts_per_pass=per_pass, share_cache=share_cache, sampling=sampling, max_new_tokens=int(max_new_tokens),
        eos=tuple(int(e) for e in eos_token_ids), return_logits=bool(return_logits),
        unroll_layers=bool(unroll_layers), cpu_decode_kernel=bool(cpu_decode_kernel), layout=layout)


def generate(
    model: Thinker,
    inputs: dict | ModelInputs,
    *,
    num_samples: int = 1,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | jax.Array = 0,
    eos_token_ids: Sequence[int] = (),
    pad_token_id: int = 0,
    layout: parallel.Layout | jax.sharding.Mesh | None = None,
    cache_dtype=None,
    max_cache_length: int | None = None,
    return_logits: bool = False,
    unroll_layers: bool | None = None,
    cpu_decode_kernel: bool | None = None,
) -> RolloutOutput:
    """Sample `num_samples` completions for every prompt of `inputs` (HF processor kwargs or ModelInputs).

    Greedy when temperature is 0. Everything is validated before anything is traced.
    layout: the `parallel.Layout` (mesh + logical-axis rules) to shard the prompts, cache and
    candidates by; a bare Mesh is `Layout(mesh)` (the default rules); None: one device.
    unroll_layers: decode with the layers unrolled on weights sliced once per call instead of a
    scan over the stacked weights; None: when the model's layer_loop is "unrolled" or on CPU,
    where the scan copies every layer's weights on every token (TPU fuses the slice into the
    matmul and keeps the smaller program).
    cpu_decode_kernel: decode with the CPU kernels of `omni_jax.kernels.cpu_gemv`: each decoder layer
    one fused custom call, float32, on a packed copy of the decoder's weights (made once per set of
    weights: kept while the same weight arrays come again, see `packed_decoder`); None: when
    decoding on one CPU device in float32 and the kernel builds here.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    sampling = Sampling(float(temperature), int(top_k), float(top_p))
    cfg = model.cfg
    if not isinstance(inputs, ModelInputs):
        inputs = prepare_inputs(cfg, **inputs)
    prompt_length = int(np.shape(inputs.input_ids)[1])
    check_cache_length(cfg, prompt_length, max_new_tokens, max_cache_length)
    layout = parallel.as_layout(layout)
    graphdef, state = nnx.split(model)
    rng = jax.random.key(seed) if isinstance(seed, int) else seed
    steps = build_rollout_steps(
        graphdef, cfg, num_prompts=int(np.shape(inputs.input_ids)[0]), num_samples=num_samples,
        max_new_tokens=max_new_tokens, sampling=sampling, eos_token_ids=eos_token_ids, cache_dtype=cache_dtype,
        layout=layout, return_logits=return_logits, unroll_layers=unroll_layers,
        cpu_decode_kernel=cpu_decode_kernel, has_adapters=lora.has_adapters(model))
    ctx = layout.activate() if layout is not None else contextlib.nullcontext()
    with ctx:
        inputs = jax.device_put(inputs, steps.input_shardings(inputs))
        prefilled = steps.prefill(*steps.prefill_args(state, inputs))
        packed = packed_decoder(graphdef, state) if steps.cpu_decode_kernel else None
        tokens, logprobs, mask, lengths, all_logits = steps.decode(
            *steps.decode_args(state, packed, prefilled, rng, jnp.int32(pad_token_id)))
    return RolloutOutput(tokens, logprobs, mask, lengths, prefilled[4], all_logits)
