"""The Whisper-like audio encoder of the Thinker (`thinker.audio_tower`).

Per chunk of 2·n_window mel frames: conv1 (k3, p1) + GELU, masked, conv2 (k3, s2, p1) + GELU,
sinusoidal positions restarting at 0 in every chunk, pre-LN transformer layers attending inside
the chunk only. Then per audio: average-pool token pairs, ln_post, projection to the text width.
The chunking is decided on the host (`layout.audio_layout`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_jax.model.config import AudioConfig
from omni_jax.model.layers import Dense, LayerNorm, activation, attention, param


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """float32[length, channels]: [sin | cos] of position · geometric inverse timescales."""
    increment = np.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-increment * np.arange(channels // 2, dtype=np.float32)).astype(np.float32)
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


class Conv1d(nnx.Module):
    """torch.nn.Conv1d(kernel 3, padding 1) on [C, L, in] (channels last). kernel: [3, in, out]."""

    def __init__(self, cin: int, cout: int, axes, *, stride: int, rngs, dtype, param_dtype):
        self.kernel = param(rngs, (3, cin, cout), ("conv_width", *axes), "normal", param_dtype)
        self.bias = param(rngs, (cout,), axes[1:], "zeros", param_dtype)
        self.stride = stride
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        length = x.shape[1]
        out_len = (length - 1) // self.stride + 1
        xp = jnp.pad(x.astype(self.dtype), ((0, 0), (1, 1), (0, 0)))
        w = self.kernel[...].astype(self.dtype)
        y = self.bias[...].astype(self.dtype)
        for tap in range(3):  # three shifted matmuls: exact, and cheap next to the transformer
            window = jax.lax.slice_in_dim(xp, tap, tap + self.stride * (out_len - 1) + 1, self.stride, axis=1)
            y = y + window @ w[tap]
        return y


class AudioAttention(nnx.Module):
    """Bidirectional multi-head self-attention of an audio encoder layer (HF's q/k/v/out_proj; k without bias)."""

    def __init__(self, cfg: AudioConfig, *, rngs, dtype, param_dtype):
        d = cfg.d_model
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.q_proj = Dense(d, d, ("audio_embed", "audio_heads"), bias=True, **kw)
        self.k_proj = Dense(d, d, ("audio_embed", "audio_heads"), bias=False, **kw)
        self.v_proj = Dense(d, d, ("audio_embed", "audio_heads"), bias=True, **kw)
        self.out_proj = Dense(d, d, ("audio_heads", "audio_embed"), bias=True, **kw)
        self.num_heads = cfg.encoder_attention_heads

    def __call__(self, x, mask):
        """x: [C, L, D]; mask: bool[C, L, L]."""
        c, length, d = x.shape
        q, k, v = (f(x).reshape(c, length, self.num_heads, -1) for f in (self.q_proj, self.k_proj, self.v_proj))
        return self.out_proj(attention(q, k, v, mask).reshape(c, length, d))


class AudioLayer(nnx.Module):
    """One pre-norm Whisper-style audio encoder layer: LayerNorm, self-attention, LayerNorm, MLP (activation_function, GELU)."""

    def __init__(self, cfg: AudioConfig, *, rngs, dtype, param_dtype):
        d = cfg.d_model
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.self_attn_layer_norm = LayerNorm(d, "norm", param_dtype=param_dtype)
        self.self_attn = AudioAttention(cfg, **kw)
        self.final_layer_norm = LayerNorm(d, "norm", param_dtype=param_dtype)
        self.fc1 = Dense(d, cfg.encoder_ffn_dim, ("audio_embed", "audio_mlp"), bias=True, **kw)
        self.fc2 = Dense(cfg.encoder_ffn_dim, d, ("audio_mlp", "audio_embed"), bias=True, **kw)
        self.act = cfg.activation_function

    def __call__(self, x, mask):
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask)
        return x + self.fc2(activation(self.act, self.fc1(self.final_layer_norm(x))))


class AudioEncoder(nnx.Module):
    """HF's Qwen2_5OmniAudioEncoder (`thinker.audio_tower`): mel chunks → audio tokens of the decoder's width."""

    def __init__(self, cfg: AudioConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        d = cfg.d_model
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.conv1 = Conv1d(cfg.num_mel_bins, d, ("audio_mel", "audio_embed"), stride=1, **kw)
        self.conv2 = Conv1d(d, d, ("audio_embed", "audio_embed"), stride=2, **kw)

        @nnx.split_rngs(splits=cfg.encoder_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(rngs):
            return AudioLayer(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

        self.layers = make_layers(rngs)
        self.ln_post = LayerNorm(d, "norm", param_dtype=param_dtype)
        self.proj = Dense(d, cfg.output_dim, ("audio_embed", "embed"), bias=True, **kw)
        # Unused by the forward pass (as in HF) but part of the checkpoint, so it round-trips.
        self.audio_bos_eos_token = param(rngs, (2, cfg.output_dim), (None, "embed"), "normal", param_dtype)
        self.cfg = cfg
        self.dtype = dtype

    def __call__(self, layout) -> jax.Array:
        """layout: an AudioLayout of device arrays. Returns [P, output_dim] (all audios' tokens, in order)."""
        x = jnp.swapaxes(layout.chunks, 1, 2)  # [C, L, mel]
        x = activation("gelu", self.conv1(x)) * layout.frame_valid[..., None].astype(self.dtype)
        x = activation("gelu", self.conv2(x))  # [C, L2, D]
        pos = sinusoids(self.cfg.max_source_positions, self.cfg.d_model)[: x.shape[1]]
        x = x + jnp.asarray(pos, x.dtype)
        valid = layout.token_valid
        mask = jnp.broadcast_to(valid[:, None, :], (valid.shape[0], valid.shape[1], valid.shape[1]))
        graphdef, state = nnx.split(self.layers)

        def body(h, layer_state):
            return nnx.merge(graphdef, layer_state)(h, mask), None

        x, _ = jax.lax.scan(body, x, state)
        tokens = x.reshape(-1, x.shape[-1])[layout.token_index]
        pooled = (tokens[layout.pool_index] + tokens[layout.pool_index + 1]) / 2
        return self.proj(self.ln_post(pooled))
