"""The Qwen2.5-Omni Thinker: text decoder + vision encoder + audio encoder.

Attribute names mirror HF's `Qwen2_5OmniThinkerForConditionalGeneration` (`model`, `lm_head`,
`visual`, `audio_tower`) so the mapping table reads side by side with the checkpoint.

    model = omni_jax.load_thinker("/ckpt/Qwen2.5-Omni-7B")
    logits = model(**processor_outputs)        # numpy in, numpy logits [B, T, V] out

Inside jitted code use the pure pieces: `embed(inputs)`, `hidden_states(...)`, `logits(hidden)`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_jax.model.audio import AudioEncoder
from omni_jax.model.config import ThinkerConfig
from omni_jax.model.inputs import ModelInputs, prepare_inputs
from omni_jax.model.layers import Dense
from omni_jax.model.rope import mrope_cos_sin
from omni_jax.model.text import KVCache, TextModel, causal_mask
from omni_jax.model.vision import VisionEncoder


class Thinker(nnx.Module):
    """The Qwen2.5-Omni Thinker (text decoder, vision encoder, audio encoder) as one nnx module.

        model = Thinker(cfg, rngs=nnx.Rngs(0))          # random weights; load_thinker(path) for real ones
        logits = model(**processor_outputs)            # numpy in, numpy float32 [B, T, vocab] out

    Inside jitted code use its pure pieces: `embed`, `hidden_states`, `logits`, `forward`.
    Attribute names follow HF's checkpoint (`model`, `lm_head`, `visual`, `audio_tower`).
    """
    def __init__(self, cfg: ThinkerConfig, *, rngs: nnx.Rngs):
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.model = TextModel(cfg.text, remat=cfg.remat, query_chunk=cfg.attention_query_chunk,
                               key_chunk=cfg.attention_key_chunk, layer_loop=cfg.layer_loop, **kw)
        self.lm_head = None if cfg.text.tie_word_embeddings else Dense(
            cfg.text.hidden_size, cfg.text.vocab_size, ("embed", "vocab"), bias=False, **kw)
        self.visual = VisionEncoder(cfg.vision, query_chunk=cfg.attention_query_chunk,
                                    key_chunk=cfg.attention_key_chunk, **kw)
        self.audio_tower = AudioEncoder(cfg.audio, **kw)
        self.cfg = cfg

    # ---- pure pieces (traceable) -------------------------------------------------------------

    def embed(self, inputs: ModelInputs) -> jax.Array:
        """Token embeddings with encoder outputs spliced in at the placeholders: [B, T, D]."""
        x = self.model.embed_tokens(inputs.input_ids).astype(jnp.dtype(self.cfg.dtype))
        features = []
        if inputs.audio is not None:
            features.append(self.audio_tower(inputs.audio))
        if inputs.vision is not None:
            features.append(self.visual(inputs.vision.pixel_values, inputs.vision))
        if not features:
            return x
        feats = jnp.concatenate([f.astype(x.dtype) for f in features])
        idx = inputs.feature_index
        return jnp.where((idx >= 0)[..., None], feats[jnp.maximum(idx, 0)], x)

    def hidden_states(self, embeds, position_ids, mask, cache: KVCache | None = None, cache_index=None,
                      layers: tuple | None = None, prompt_cache: tuple | None = None):
        """Decoder over `embeds` [B, T, D] with TMRoPE `position_ids` [3, B, T] and mask bool[B, T, S].

        layers: `self.model.unstacked_layers()`, to run the layers unrolled on those slices (see there).
        prompt_cache: shared prompts' keys and values next to the cache (see `TextModel.__call__`).
        """
        cos, sin = self._rope(position_ids)
        return self.model(embeds, cos, sin, mask, cache, cache_index, layers=layers, prompt_cache=prompt_cache)

    def shared_prompt_hidden_states(self, prompt: tuple, rest: tuple, prefix_share: int):
        """Each prompt once and the `prefix_share` rows that continue each (see `TextModel.shared_prompt`).

        prompt / rest: (embeds, position_ids [3, ·, ·], mask). Returns (prompt hidden, rest hidden).
        """
        (pe, pp, pm), (e, pos, m) = prompt, rest
        return self.model.shared_prompt((pe, *self._rope(pp), pm), (e, *self._rope(pos), m), prefix_share)

    def _rope(self, position_ids):
        t = self.cfg.text
        return mrope_cos_sin(position_ids, t.kv_head_dim, t.rope_theta, t.mrope_section)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """[..., D] → float32[..., vocab] (the CPU decode kernel's own: `omni_jax.kernels.cpu_decode.project`)."""
        out = self.model.embed_tokens.attend(hidden) if self.lm_head is None else self.lm_head(hidden)
        return out.astype(jnp.float32)

    def forward(self, inputs: ModelInputs) -> jax.Array:
        """Full-sequence logits float32[B, T, V] (no cache)."""
        x = self.embed(inputs)
        t = inputs.input_ids.shape[1]
        q_index = jnp.broadcast_to(jnp.arange(t), inputs.input_ids.shape)
        hidden, _ = self.hidden_states(x, inputs.position_ids, causal_mask(inputs.attention_mask, q_index))
        return self.logits(hidden)

    # ---- convenience: HF-style call on numpy inputs -----------------------------------------

    def __call__(self, **hf_inputs) -> np.ndarray:
        """Logits [B, T, vocab] (numpy float32) from the HF processor's keyword arguments."""
        inputs = prepare_inputs(self.cfg, **hf_inputs)
        graphdef, state = nnx.split(self)
        return np.asarray(_jitted_forward(graphdef, state, inputs))


@functools.partial(jax.jit, static_argnums=0)
def _jitted_forward(graphdef, state, inputs: ModelInputs) -> jax.Array:
    return nnx.merge(graphdef, state).forward(inputs)


def abstract_thinker(cfg: ThinkerConfig) -> Thinker:
    """The model with ShapeDtypeStruct parameters: shapes and logical axes, no memory."""
    return nnx.eval_shape(lambda: Thinker(cfg, rngs=nnx.Rngs(0)))


def count_params(model: nnx.Module) -> int:
    """Number of parameters (nnx.Param elements) of a module."""
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
