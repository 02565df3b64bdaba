"""CLIP's image preprocessing, equal to transformers' slow `CLIPImageProcessor` (PIL/NumPy backend).

Per frame: resize so the shortest side is `shortest_edge` (the other side int(edge * long / short),
Pillow bicubic on the uint8 image), center crop `crop_size` (top = (h - crop) // 2), rescale by
1/255 in float64, normalise with the OpenAI CLIP mean / std, channels first. No torchvision.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class ClipImageSpec:
    shortest_edge: int = 224
    crop_size: int = 224
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD

    @classmethod
    def from_dir(cls, directory) -> "ClipImageSpec":
        """The spec of a HF CLIP directory's preprocessor_config.json (defaults where it has none)."""
        path = pathlib.Path(directory) / "preprocessor_config.json"
        if not path.exists():
            return cls()
        d = json.loads(path.read_text())
        size, crop = d.get("size", {}), d.get("crop_size", {})
        size = {"shortest_edge": size} if isinstance(size, int) else size
        crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
        if crop and crop.get("height") != crop.get("width"):
            raise ValueError(f"{path}: crop_size {crop} is not square; CLIP takes square images")
        return cls(shortest_edge=int(size.get("shortest_edge", cls.shortest_edge)),
                   crop_size=int(crop.get("height", cls.crop_size)),
                   image_mean=tuple(d.get("image_mean", OPENAI_CLIP_MEAN)),
                   image_std=tuple(d.get("image_std", OPENAI_CLIP_STD)))


def resize_shortest_edge(frame: np.ndarray, edge: int) -> np.ndarray:
    """uint8[H, W, 3] with its shortest side resized to `edge` (Pillow bicubic), aspect kept as HF does."""
    h, w = frame.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = edge, int(edge * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_h, new_w) == (h, w):
        return frame
    img = Image.fromarray(np.ascontiguousarray(frame))
    return np.asarray(img.resize((new_w, new_h), Image.Resampling.BICUBIC))


def center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if h < size or w < size:  # only when shortest_edge < crop_size: pad as HF does (zeros, centred)
        out = np.zeros((max(h, size), max(w, size), frame.shape[2]), frame.dtype)
        top, left = (out.shape[0] - h + 1) // 2, (out.shape[1] - w + 1) // 2
        out[top:top + h, left:left + w] = frame
        frame, h, w = out, *out.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return frame[top:top + size, left:left + size]


def clip_pixel_values(frames: np.ndarray, spec: ClipImageSpec = ClipImageSpec()) -> np.ndarray:
    """uint8[N, H, W, 3] frames → float32[N, 3, crop, crop], CLIP's `pixel_values`."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8[N, H, W, 3], got {frames.dtype}{frames.shape}")
    out = np.empty((frames.shape[0], 3, spec.crop_size, spec.crop_size), np.float32)
    mean = np.asarray(spec.image_mean, np.float32)[:, None, None]
    std = np.asarray(spec.image_std, np.float32)[:, None, None]
    for i, frame in enumerate(frames):
        x = center_crop(resize_shortest_edge(frame, spec.shortest_edge), spec.crop_size)
        x = (x.transpose(2, 0, 1).astype(np.float64) * (1 / 255)).astype(np.float32)
        out[i] = (x - mean) / std
    return out
