"""The one HF ↔ Flax name table of CLIP, in the style of `omni_jax.weights.mapping`.

Flax paths are HF's names with `.weight` of a Linear as `.kernel` (transposed), of an Embedding as
`.embedding`, and the patch Conv2d as a Linear over flattened (C, P, P) patches. `{i}` marks the
stacked layer axis. Loading (`weights.clip_load.load_params`) and export (`weights.clip_load.to_hf`) both read
this table.
"""

from __future__ import annotations

from omni_jax.weights.mapping import LINEAR, PATCH, SAME, Layout, Row

# HF non-parameter buffers some CLIP checkpoints carry (older transformers saved them).
IGNORED_SUFFIXES = ("position_ids",)


def _linear(flax: str, hf: str, bias: bool = True) -> list[Row]:
    rows = [Row(f"{flax}.kernel", f"{hf}.weight", LINEAR)]
    return rows + ([Row(f"{flax}.bias", f"{hf}.bias", SAME)] if bias else [])


def _norm(name: str) -> list[Row]:
    return [Row(f"{name}.weight", f"{name}.weight", SAME), Row(f"{name}.bias", f"{name}.bias", SAME)]


def _encoder(prefix: str) -> list[Row]:
    layer = f"{prefix}.encoder.layers.{{i}}"
    rows = []
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        rows += _linear(f"{layer}.self_attn.{proj}", f"{layer}.self_attn.{proj}")
    rows += _norm(f"{layer}.layer_norm1") + _norm(f"{layer}.layer_norm2")
    rows += _linear(f"{layer}.mlp.fc1", f"{layer}.mlp.fc1") + _linear(f"{layer}.mlp.fc2", f"{layer}.mlp.fc2")
    return rows


def clip_rows() -> list[Row]:
    """Every parameter of a CLIPModel, in the order HF lists them."""
    t, v = "text_model", "vision_model"
    rows = [Row(f"{t}.embeddings.token_embedding.embedding", f"{t}.embeddings.token_embedding.weight", SAME),
            Row(f"{t}.embeddings.position_embedding.embedding", f"{t}.embeddings.position_embedding.weight", SAME)]
    rows += _encoder(t) + _norm(f"{t}.final_layer_norm")
    rows += [Row(f"{v}.embeddings.class_embedding", f"{v}.embeddings.class_embedding", SAME),
             Row(f"{v}.embeddings.patch_embedding.kernel", f"{v}.embeddings.patch_embedding.weight", PATCH),
             Row(f"{v}.embeddings.position_embedding.embedding", f"{v}.embeddings.position_embedding.weight", SAME)]
    rows += _norm(f"{v}.pre_layrnorm") + _encoder(v) + _norm(f"{v}.post_layernorm")
    rows += _linear("visual_projection", "visual_projection", bias=False)
    rows += _linear("text_projection", "text_projection", bias=False)
    rows += [Row("logit_scale", "logit_scale", SAME)]
    return rows


def num_layers(row: Row, cfg) -> int:
    """Stacked layers of the tower `row` belongs to (CLIPConfig `cfg`)."""
    if not row.stacked:
        return 0
    return (cfg.text if row.flax.startswith("text_model.") else cfg.vision).num_hidden_layers


def hf_names(row: Row, cfg) -> list[str]:
    """HF tensor names a row stands for (one per layer for stacked rows)."""
    if row.stacked:
        return [row.hf.format(i=i) for i in range(num_layers(row, cfg))]
    return [row.hf]


def hf_shape(row: Row, flax_shape: tuple[int, ...], cfg) -> tuple[int, ...]:
    """The HF tensor shape of one layer of `row`, from its per-layer Flax shape."""
    layout: Layout = row.layout
    if layout is PATCH:
        v = cfg.vision
        return (flax_shape[1], v.num_channels, v.patch_size, v.patch_size)
    if layout is LINEAR:
        return tuple(reversed(flax_shape))
    return tuple(flax_shape)
