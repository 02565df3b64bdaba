"""Still images (Video-R1 has some): opened with Pillow, RGB, resized by QOU's `fetch_image` rule."""

from __future__ import annotations

import numpy as np
from PIL import Image

from omni_jax.data import media, video
from omni_jax.data.errors import BadRecord


def resolve_image_limits(cfg, item: dict | None = None) -> tuple[int, int]:
    """(min_pixels, max_pixels) for one image: the item can lower image_max_pixels, not raise it."""
    item = item or {}
    max_pixels = int(cfg.image_max_pixels)
    if item.get("max_pixels") is not None:
        max_pixels = min(max_pixels, int(item["max_pixels"]))
    min_pixels = min(int(item.get("min_pixels") or cfg.image_min_pixels), max_pixels)
    return min_pixels, max_pixels


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGBA":  # transparent pixels become white, as QOU's to_rgb does
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.split()[3])
        return background
    return img.convert("RGB")


def load_image(src, factor: int, min_pixels: int, max_pixels: int) -> np.ndarray:
    """src: a path, the file's bytes, or uint8[H, W, 3]. Returns uint8[h, w, 3], sides multiples of factor."""
    if isinstance(src, np.ndarray):
        img = Image.fromarray(src)
    else:
        opened = media.open_media(src)
        try:
            img = Image.open(opened)
            img.load()
        except Exception as e:
            raise BadRecord("bad_image", f"{media.describe(src)}: {e}") from None
    img = _to_rgb(img)
    try:
        h, w = video.smart_resize(img.height, img.width, factor, min_pixels, max_pixels)
    except ValueError as e:
        raise BadRecord("bad_geometry", f"{media.describe(src)}: {e}") from None
    if (h, w) != (img.height, img.width):
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img)
