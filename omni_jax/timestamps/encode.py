"""Batched CLIP encoding of frames and event queries, and their similarity matrix.

`ClipMatcher` holds a CLIPModel, its tokenizer and its image preprocessing. Frames are encoded
`image_batch` at a time and texts `text_batch` at a time (the last batch padded), each by one
jitted function, so a whole answer costs two compiled programmes however many frames or events
it has. Embeddings are L2-normalised; the similarity is their cosine (what the plan ranks by).
"""

from __future__ import annotations

import collections
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_jax.weights.clip_load import load_clip, local_dir
from omni_jax.clip.model import CLIPModel, normalize
from omni_jax.clip.tokenizer import CLIPTokenizer
from omni_jax.data.clip_image import ClipImageSpec, clip_pixel_values


def _batches(x: np.ndarray, size: int):
    """(padded batch, number of real rows) of `size` rows each."""
    for start in range(0, len(x), size):
        chunk = x[start:start + size]
        n = len(chunk)
        if n < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - n, axis=0)])
        yield chunk, n


class ClipMatcher:
    def __init__(self, model: CLIPModel, tokenizer: CLIPTokenizer, spec: ClipImageSpec | None = None, *,
                 image_batch: int = 16, text_batch: int = 16, frame_cache: int = 32):
        self.model, self.tokenizer, self.spec = model, tokenizer, spec or ClipImageSpec()
        self.image_batch, self.text_batch, self.frame_cache = image_batch, text_batch, frame_cache
        self._cache: collections.OrderedDict = collections.OrderedDict()
        graphdef, state = nnx.split(model)
        self._state = state

        @jax.jit
        def image_fn(state, pixel_values):
            return normalize(nnx.merge(graphdef, state).get_image_features(pixel_values).astype(jnp.float32))

        @jax.jit
        def text_fn(state, ids, mask):
            return normalize(nnx.merge(graphdef, state).get_text_features(ids, mask).astype(jnp.float32))

        self._image_fn, self._text_fn = image_fn, text_fn

    @classmethod
    def load(cls, path, dtype: str = "float32", **kwargs) -> "ClipMatcher":
        """From a HF CLIP directory (local or gs://): weights, tokenizer.json, preprocessor_config.json."""
        directory = local_dir(path)
        model = load_clip(directory, dtype=dtype)
        tokenizer = CLIPTokenizer.from_dir(directory, model.cfg.text.max_position_embeddings,
                                           fallback_pad_id=model.cfg.text.pad_token_id)
        return cls(model, tokenizer, ClipImageSpec.from_dir(directory), **kwargs)

    def encode_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        """float32[N, 3, S, S] (already preprocessed) → float32[N, P] unit embeddings."""
        out = [np.asarray(self._image_fn(self._state, jnp.asarray(b)))[:n]
               for b, n in _batches(pixel_values, self.image_batch)]
        return np.concatenate(out) if out else np.zeros((0, self.model.cfg.projection_dim), np.float32)

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8[N, H, W, 3] → float32[N, P] unit embeddings.

        The last `frame_cache` results are kept by a hash of the frames: an evaluation asks about
        the same video several times (probe instructions, checkpoints), and the image tower is
        most of the post-processor's time.
        """
        key = (frames.shape, hashlib.blake2b(np.ascontiguousarray(frames).data, digest_size=16).digest())
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        out = self.encode_pixels(clip_pixel_values(frames, self.spec))
        self._cache[key] = out
        while len(self._cache) > self.frame_cache:
            self._cache.popitem(last=False)
        return out

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """N strings → float32[N, P] unit embeddings."""
        if not texts:
            return np.zeros((0, self.model.cfg.projection_dim), np.float32)
        ids, mask = self.tokenizer(texts)
        out = [np.asarray(self._text_fn(self._state, jnp.asarray(i), jnp.asarray(m)))[:n]
               for (i, n), (m, _) in zip(_batches(ids, self.text_batch), _batches(mask, self.text_batch), strict=True)]
        return np.concatenate(out)

    def similarity(self, frames: np.ndarray, texts: list[str]) -> np.ndarray:
        """float32[E, F]: cosine similarity of every text (row) with every frame (column)."""
        return self.encode_texts(texts) @ self.encode_frames(frames).T
