"""Where media bytes come from: a local path, a `file://` URI, or the bytes themselves.

Records prepared with TFDS carry the mp4 bytes inline (self-contained on GCS); records read from a
JSON manifest carry paths. Both open the same way here, and the two commonest faults (missing
file, empty file) become BadRecord before any decoder sees them.
"""

from __future__ import annotations

import io
import os

from omni_jax.data.errors import BadRecord

MediaSource = str | bytes | os.PathLike


def describe(src) -> str:
    """A short human name for a media source, for error messages."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    return str(src)


def open_media(src: MediaSource):
    """A path string or a BytesIO for `src`, checked to exist and be non-empty.

    Raises BadRecord("missing_file" | "empty_file").
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise BadRecord("empty_file", "media bytes are empty (zero-byte file in the record)")
        return io.BytesIO(bytes(src))
    path = os.fspath(src)
    if path.startswith("file://"):
        path = path[len("file://") :]
    if not os.path.exists(path):
        raise BadRecord("missing_file", f"{path} does not exist")
    if os.path.getsize(path) == 0:
        raise BadRecord("empty_file", f"{path} is a zero-byte file")
    return path
