"""omni_jax: GRPO post-training of the Qwen2.5-Omni Thinker in JAX/Flax."""

from __future__ import annotations

from omni_jax.version import __version__

__all__ = ["__version__", "load_thinker"]


def load_thinker(path, dtype="float32", *, param_dtype=None, layout=None, progress=True, step=None, **options):
    """Load a Qwen2.5-Omni Thinker from an HF checkpoint directory or an omni_jax checkpoint store.

    path: a local HF directory with config.json and safetensors (single or sharded with an index),
    either a full Qwen2.5-Omni (`thinker.*` keys; talker / token2wav ignored) or a thinker-only
    save; or an omni_jax `CheckpointStore` (local or gs://: `python -m omni_jax.convert hf2jax`
    output or a training run directory, or one `<store>/<step>` directory of it).
    step: which step of a store (default: the latest committed one).
    dtype: compute dtype ("float32" or "bfloat16"); param_dtype: storage dtype (defaults to dtype).
    layout: an `omni_jax.parallel.Layout` (mesh + logical-axis rules), or a bare `jax.sharding.Mesh`
    (read as `Layout(mesh)`: the default rules); each parameter is placed directly onto its sharding.
    options: other ThinkerConfig numerics fields (remat, attention_query_chunk, attention_key_chunk).
    Returns an `omni_jax.model.Thinker`; call it as `model(**processor_outputs)` for logits.
    """
    # Deferred: `import omni_jax` stays light (no jax / flax / orbax) and the package root imports
    # nothing of its own subpackages.
    from omni_jax.checkpoint.loading import load_thinker as _load

    return _load(path, dtype, param_dtype=param_dtype, layout=layout, progress=progress, step=step, **options)
