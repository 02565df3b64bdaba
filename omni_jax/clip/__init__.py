"""CLIP (HF `CLIPModel` checkpoints: OpenAI ViT-B/32, ViT-L/14, ...) in Flax NNX.

    from omni_jax.clip import load_clip
    model = load_clip("/ckpt/clip-vit-base-patch32")  # or gs://bucket/clip-vit-base-patch32
"""

from omni_jax.clip.config import CLIPConfig, load_config, preset_config
from omni_jax.clip.loading import load_clip, save_hf, to_hf
from omni_jax.clip.model import CLIPModel, abstract_clip

__all__ = ["CLIPConfig", "CLIPModel", "abstract_clip", "load_clip", "load_config", "preset_config", "save_hf", "to_hf"]
