"""Orbax checkpoints for conversion output and training alike (see `store.py` for the layout).

    store = CheckpointStore("/ckpt/run1", max_to_keep=3)
    store.save(step, params=params, meta=thinker_meta(cfg), extra={"opt_state": opt, "data": {...}})
    restored = store.restore(params_abstract=abstract_with_shardings, extra_abstract={"opt_state": ...})
"""

from omni_jax.checkpoint.store import CheckpointStore, Restored
from omni_jax.checkpoint.streaming import StreamedArray, TensorStoreLeaf
from omni_jax.checkpoint.thinker import FORMAT, is_checkpoint, locate, open_thinker_step, thinker_meta
from omni_jax.checkpoint.verify import CheckpointMismatch, DamagedCheckpoint

__all__ = ["CheckpointMismatch", "CheckpointStore", "DamagedCheckpoint", "Restored", "StreamedArray", "TensorStoreLeaf", "FORMAT", "is_checkpoint", "locate",
           "open_thinker_step", "thinker_meta"]
