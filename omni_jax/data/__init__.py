"""Video + audio input pipeline: records -> HF-processor-style arrays -> batches.

    prepare(messages, cfg, tokenizer=None)   one conversation -> processor kwargs (numpy)
    prepare_record(record, cfg, tokenizer)   one dataset record -> the same + its metadata
    data_defaults(arg=None)                  every knob (ml_collections)
    Mixture / mixture_from_config            the seeded, sharded, resumable batch stream
"""

from omni_jax.data.config import data_defaults
from omni_jax.data.errors import REASONS, BadRecord, DataError
from omni_jax.data.example import prepare_record
from omni_jax.data.mixture import Mixture
from omni_jax.data.mixture import from_config as mixture_from_config
from omni_jax.data.processor import prepare

__all__ = ["prepare", "prepare_record", "data_defaults", "Mixture", "mixture_from_config", "BadRecord",
           "DataError", "REASONS"]
