"""The Qwen2.5-Omni Thinker in Flax NNX."""

from omni_jax.model.config import ThinkerConfig, from_hf_dict, load_config
from omni_jax.model.inputs import ModelInputs, prepare_inputs
from omni_jax.model.thinker import Thinker, abstract_thinker, count_params

__all__ = ["ThinkerConfig", "from_hf_dict", "load_config", "ModelInputs", "prepare_inputs", "Thinker",
           "abstract_thinker", "count_params"]
