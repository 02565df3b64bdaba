"""CLIP (HF `CLIPModel` checkpoints: OpenAI ViT-B/32, ViT-L/14, ...) in Flax NNX.

The model only; its weights load through the HF name table in the weights layer:

    from omni_jax.weights.clip_load import load_clip
    model = load_clip("/ckpt/clip-vit-base-patch32")  # or gs://bucket/clip-vit-base-patch32
"""

from omni_jax.clip.config import CLIPConfig, load_config, preset_config
from omni_jax.clip.model import CLIPModel, abstract_clip

__all__ = ["CLIPConfig", "CLIPModel", "abstract_clip", "load_config", "preset_config"]
