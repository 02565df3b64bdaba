"""CLIP's two towers and projections in Flax NNX (HF `CLIPModel`, parameter names kept).

Both towers are pre-norm transformers (LayerNorm, multi-head attention with biases, fc1 → act →
fc2); the vision tower embeds 2-D patches plus a class token and pools the class token after
`post_layernorm`, the text tower is causal and pools the end-of-text token after
`final_layer_norm`. The layers of a tower are stacked on axis 0 and run by one `lax.scan`.
Attention logits, softmax and LayerNorm run in float32, as HF does. Parameters carry logical axes
(clip_embed, clip_heads, clip_mlp, clip_patch, clip_proj, layers); the default rules name none of
the clip_* axes, so CLIP (0.15–0.43 B parameters) is replicated on a mesh unless a config maps them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from omni_jax.clip.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from omni_jax.model.layers import Dense, LayerNorm, param


def act(name: str, x: jax.Array) -> jax.Array:
    if name == "quick_gelu":
        return x * jax.nn.sigmoid(1.702 * x)
    if name == "gelu":
        return jax.nn.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return jax.nn.gelu(x, approximate=True)
    raise ValueError(f"unsupported CLIP hidden_act {name!r}")


class CLIPAttention(nnx.Module):
    def __init__(self, cfg, *, rngs, dtype, param_dtype):
        d = cfg.hidden_size
        kw = dict(bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.q_proj = Dense(d, d, ("clip_embed", "clip_heads"), **kw)
        self.k_proj = Dense(d, d, ("clip_embed", "clip_heads"), **kw)
        self.v_proj = Dense(d, d, ("clip_embed", "clip_heads"), **kw)
        self.out_proj = Dense(d, d, ("clip_heads", "clip_embed"), **kw)
        self.num_heads = cfg.num_attention_heads

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        """x: [B, T, D]; mask: bool[B, T, T] (True = attend) or None. Returns [B, T, D]."""
        b, t, d = x.shape
        q, k, v = (f(x).reshape(b, t, self.num_heads, -1) for f in (self.q_proj, self.k_proj, self.v_proj))
        scale = q.shape[-1] ** -0.5
        logits = jnp.einsum("BTNH,BSNH->BNTS", q, k, preferred_element_type=jnp.float32) * scale
        if mask is not None:
            logits = jnp.where(mask[:, None], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("BNTS,BSNH->BTNH", probs, v).reshape(b, t, d)
        return self.out_proj(out)


class CLIPMLP(nnx.Module):
    def __init__(self, cfg, *, rngs, dtype, param_dtype):
        kw = dict(bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.fc1 = Dense(cfg.hidden_size, cfg.intermediate_size, ("clip_embed", "clip_mlp"), **kw)
        self.fc2 = Dense(cfg.intermediate_size, cfg.hidden_size, ("clip_mlp", "clip_embed"), **kw)
        self.hidden_act = cfg.hidden_act

    def __call__(self, x):
        return self.fc2(act(self.hidden_act, self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
    def __init__(self, cfg, *, rngs, dtype, param_dtype):
        norm = dict(eps=cfg.layer_norm_eps, param_dtype=param_dtype)
        self.layer_norm1 = LayerNorm(cfg.hidden_size, "norm", **norm)
        self.self_attn = CLIPAttention(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.layer_norm2 = LayerNorm(cfg.hidden_size, "norm", **norm)
        self.mlp = CLIPMLP(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nnx.Module):
    """`num_hidden_layers` CLIPEncoderLayers, parameters stacked on axis 0 ("layers")."""

    def __init__(self, cfg, *, rngs, dtype, param_dtype):
        @nnx.split_rngs(splits=cfg.num_hidden_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(rngs):
            return CLIPEncoderLayer(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

        self.layers = make_layers(rngs)

    def __call__(self, x, mask=None):
        graphdef, state = nnx.split(self.layers)

        def body(h, layer_state):
            return nnx.merge(graphdef, layer_state)(h, mask), None

        x, _ = jax.lax.scan(body, x, state)
        return x


class CLIPVisionEmbeddings(nnx.Module):
    def __init__(self, cfg: CLIPVisionConfig, *, rngs, dtype, param_dtype):
        d = cfg.hidden_size
        # The stride-P convolution as a linear map of each (C, P, P) patch (HF's Conv2d weight reshaped).
        self.patch_embedding = Dense(cfg.patch_dim, d, ("clip_patch", "clip_embed"), bias=False, rngs=rngs,
                                     dtype=dtype, param_dtype=param_dtype)
        self.class_embedding = param(rngs, (d,), ("clip_embed",), "normal", param_dtype)
        self.position_embedding = nnx.Embed(cfg.num_patches + 1, d, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.cfg = cfg

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        """pixel_values: float[B, C, H, W] (HF's layout) with H = W = image_size. Returns [B, 1 + N, D]."""
        cfg = self.cfg
        b, c, h, w = pixel_values.shape
        if (h, w) != (cfg.image_size, cfg.image_size) or c != cfg.num_channels:
            raise ValueError(f"pixel_values {pixel_values.shape}: this CLIP takes [B, {cfg.num_channels}, "
                             f"{cfg.image_size}, {cfg.image_size}] (preprocess frames with clip_pixel_values)")
        p = cfg.patch_size
        patches = pixel_values.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
        x = self.patch_embedding(patches.reshape(b, (h // p) * (w // p), c * p * p))
        cls = jnp.broadcast_to(self.class_embedding[...].astype(x.dtype), (b, 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1)
        return x + self.position_embedding.embedding[...].astype(x.dtype)[None]


class CLIPVisionTransformer(nnx.Module):
    """HF's `CLIPVisionModel.vision_model`: returns the pooled (post-norm class token) output."""

    def __init__(self, cfg: CLIPVisionConfig, *, rngs, dtype, param_dtype):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.embeddings = CLIPVisionEmbeddings(cfg, **kw)
        self.pre_layrnorm = LayerNorm(cfg.hidden_size, "norm", eps=cfg.layer_norm_eps, param_dtype=param_dtype)
        self.encoder = CLIPEncoder(cfg, **kw)
        self.post_layernorm = LayerNorm(cfg.hidden_size, "norm", eps=cfg.layer_norm_eps, param_dtype=param_dtype)

    def __call__(self, pixel_values):
        x = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return self.post_layernorm(x[:, 0])


class CLIPTextEmbeddings(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, *, rngs, dtype, param_dtype):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.token_embedding = nnx.Embed(cfg.vocab_size, cfg.hidden_size, **kw)
        self.position_embedding = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, **kw)


class CLIPTextTransformer(nnx.Module):
    """HF's `CLIPTextModel.text_model`: causal, pooled at the end-of-text token."""

    def __init__(self, cfg: CLIPTextConfig, *, rngs, dtype, param_dtype):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.embeddings = CLIPTextEmbeddings(cfg, **kw)
        self.encoder = CLIPEncoder(cfg, **kw)
        self.final_layer_norm = LayerNorm(cfg.hidden_size, "norm", eps=cfg.layer_norm_eps, param_dtype=param_dtype)
        self.cfg = cfg

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """input_ids: int[B, T] with T <= max_position_embeddings; attention_mask: {0,1}[B, T] or None."""
        b, t = input_ids.shape
        if t > self.cfg.max_position_embeddings:
            raise ValueError(f"{t} text tokens; this CLIP reads at most {self.cfg.max_position_embeddings}")
        emb = self.embeddings
        x = emb.token_embedding(input_ids) + emb.position_embedding.embedding[...][:t].astype(emb.token_embedding.dtype)
        mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
        if attention_mask is not None:
            mask = mask & attention_mask.astype(bool)[:, None, :]
        x = self.final_layer_norm(self.encoder(x, mask))
        return x[jnp.arange(b), eos_positions(input_ids, self.cfg.eos_token_id)]


def eos_positions(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
    """int[B]: where HF pools: the largest id when eos_token_id == 2 (OpenAI's configs), else the
    first eos_token_id."""
    if eos_token_id == 2:
        return jnp.argmax(input_ids, axis=-1)
    return jnp.argmax(input_ids == eos_token_id, axis=-1)


class CLIPModel(nnx.Module):
    """HF's CLIPModel: text_model, vision_model, text/visual projections and logit_scale."""

    def __init__(self, cfg: CLIPConfig, *, rngs: nnx.Rngs):
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.text_model = CLIPTextTransformer(cfg.text, **kw)
        self.vision_model = CLIPVisionTransformer(cfg.vision, **kw)
        self.visual_projection = Dense(cfg.vision.hidden_size, cfg.projection_dim, ("clip_embed", "clip_proj"),
                                       bias=False, **kw)
        self.text_projection = Dense(cfg.text.hidden_size, cfg.projection_dim, ("clip_embed", "clip_proj"),
                                     bias=False, **kw)
        self.logit_scale = nnx.Param(jnp.asarray(cfg.logit_scale_init_value, param_dtype), out_sharding=(),
                                     eager_sharding=False)
        self.cfg = cfg

    def get_image_features(self, pixel_values: jax.Array) -> jax.Array:
        """pixel_values: float[B, 3, S, S] → float[B, projection_dim] (not normalised), as HF."""
        return self.visual_projection(self.vision_model(pixel_values))

    def get_text_features(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """input_ids: int[B, T] → float[B, projection_dim] (not normalised), as HF."""
        return self.text_projection(self.text_model(input_ids, attention_mask))

    def __call__(self, input_ids, pixel_values, attention_mask=None) -> dict[str, jax.Array]:
        """HF CLIPModel.forward's outputs: image_embeds [I, P], text_embeds [T, P] (unit norm),
        logits_per_image [I, T], logits_per_text [T, I]."""
        image = normalize(self.get_image_features(pixel_values))
        text = normalize(self.get_text_features(input_ids, attention_mask))
        logits_per_text = (text @ image.T) * jnp.exp(self.logit_scale[...].astype(text.dtype))
        return {"image_embeds": image, "text_embeds": text, "logits_per_image": logits_per_text.T,
                "logits_per_text": logits_per_text}


def normalize(x: jax.Array) -> jax.Array:
    """Rows divided by their L2 norm (HF's `_get_vector_norm`)."""
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def abstract_clip(cfg: CLIPConfig) -> CLIPModel:
    """The model's structure with ShapeDtypeStruct parameters (nothing allocated)."""
    return nnx.eval_shape(lambda: CLIPModel(cfg, rngs=nnx.Rngs(0)))


def num_params(model_or_state) -> int:
    state = nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module) else model_or_state
    return sum(int(x.size) for x in jax.tree.leaves(state))
