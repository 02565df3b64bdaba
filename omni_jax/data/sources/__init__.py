"""Record sources: the datasets as random-access sequences of records in one schema.

Record schema (every source yields dicts with these keys; `validate_record` checks them):

    id            str    unique within its source
    source        str    source name: social_iq2 | emer | video_r1 | intentbench | synthetic | ...
    data_type     str    "video" or "image"
    video         bytes | str | uint8[T, H, W, 3] | None
                         the container file's bytes (TFDS records embed them, so a prepared
                         dataset is self-contained on local disk or GCS), a local path (manifests,
                         TFDS "by_path" config), or decoded frames (synthetic)
    video_fps     float | None   frame rate of decoded frames (arrays only)
    image         bytes | str | uint8[H, W, 3] | None    for data_type "image"
    audio         bytes | str | float32[S] | None
                         a separate audio file or a 16 kHz mono waveform; None means "the video's
                         own track, if it has one"
    problem       str    the question
    problem_type  str    "multiple choice" | "emer_ov_mc" | "numerical" | "free-form" | "OCR" |
                         "regression" | "emer_ov" | "judge" (HumanOmniV2's set)
    options       list[str]   "A. text" strings for multiple choice / emer_ov_mc, else []
    solution      str    HumanOmniV2's target, "...<answer>X</answer>"
    answer        str    the text inside <answer> (derived from solution when a row lacks it)

A source is anything with `__len__`, `__getitem__(i) -> dict` and a `name`: `ListSource` (in
memory), `registry.TfdsSource` (a prepared TFDS dataset, read with random access through
array_record), `common.JsonSource` (a HumanOmniV2 json/jsonl manifest plus a media root),
`SyntheticSource`. `registry.open_source(name, cfg)` opens one by name for the mixture.
"""

from __future__ import annotations

import re

import numpy as np

from omni_jax.data.errors import BadRecord
from omni_jax.data.prompt import TYPE_TEMPLATE
from omni_jax.rewards.accuracy import PROBLEM_TYPES as ACCURACY_TYPES

TEXT_FIELDS = ("id", "source", "data_type", "problem", "problem_type", "solution", "answer")
MC_TYPES = ("multiple choice", "emer_ov_mc")
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)


def _text(value, field: str, rid) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRecord("non_utf8_text", f"record {rid!r}: field {field!r} is not valid UTF-8") from None
    if not isinstance(value, str):
        raise BadRecord("malformed_row", f"record {rid!r}: field {field!r} must be text, got {type(value).__name__}")
    try:
        value.encode("utf-8")  # lone surrogates: bytes that were not UTF-8, escaped on reading
    except UnicodeEncodeError:
        raise BadRecord("non_utf8_text", f"record {rid!r}: field {field!r} is not valid UTF-8") from None
    return value


def media_value(value):
    """Empty bytes / empty string mean "absent" in TFDS records."""
    if value is None or (isinstance(value, (bytes, str)) and len(value) == 0):
        return None
    if isinstance(value, np.ndarray) and value.dtype == object:
        return media_value(value.item())
    return value


def validate_record(raw: dict) -> dict:
    """A checked record in the schema above, text decoded. Raises BadRecord (malformed_row / non_utf8_text)."""
    if not isinstance(raw, dict):
        raise BadRecord("malformed_row", f"a record must be a dict, got {type(raw).__name__}")
    rid = raw.get("id")
    rec = {}
    for field in TEXT_FIELDS:
        value = raw.get(field)
        if value is None and field == "answer":
            continue
        if value is None and field in ("source", "data_type"):
            value = "video" if field == "data_type" else ""
        if value is None:
            raise BadRecord("malformed_row", f"record {rid!r}: missing field {field!r}")
        rec[field] = _text(value, field, rid)
    if rec["problem_type"] not in TYPE_TEMPLATE:
        raise BadRecord("malformed_row", f"record {rid!r}: unknown problem_type {rec['problem_type']!r} "
                        f"(expected one of {sorted(TYPE_TEMPLATE)})")
    if rec["problem_type"] not in ACCURACY_TYPES:  # e.g. "emer_ov": a prompt template, no reward rule
        raise BadRecord("malformed_row", f"record {rid!r}: problem_type {rec['problem_type']!r} has no accuracy "
                        f"rule (rewards.accuracy handles {list(ACCURACY_TYPES)})")
    options = raw.get("options")
    if isinstance(options, np.ndarray):  # TFDS sequences arrive as arrays
        options = options.tolist()
    if options is not None and not isinstance(options, (list, tuple)):
        raise BadRecord("malformed_row", f"record {rid!r}: field 'options' must be a list of text, "
                        f"got {type(options).__name__}")
    rec["options"] = [_text(o, "options", rid) for o in options or ()]
    if rec["problem_type"] in MC_TYPES and not rec["options"]:
        raise BadRecord("malformed_row", f"record {rid!r}: a {rec['problem_type']} question without options")
    if "answer" not in rec:
        m = _ANSWER.search(rec["solution"])
        if m is None:
            raise BadRecord("malformed_row", f"record {rid!r}: no answer field and no <answer> in the solution")
        rec["answer"] = m.group(1)
    for field in ("video", "image", "audio"):
        rec[field] = media_value(raw.get(field))
        if rec[field] is not None and not isinstance(rec[field], (str, bytes, bytearray, np.ndarray)):
            raise BadRecord("malformed_row", f"record {rid!r}: field {field!r} must be a path, bytes or an array, "
                            f"got {type(rec[field]).__name__}")
    fps = raw.get("video_fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float, np.number)) or not fps > 0):
        raise BadRecord("malformed_row", f"record {rid!r}: field 'video_fps' must be a positive number, got {fps!r}")
    rec["video_fps"] = None if fps is None else float(fps)
    kind = rec["data_type"]
    if kind not in ("video", "image") or rec[kind] is None:
        raise BadRecord("malformed_row", f"record {rid!r}: data_type {kind!r} without its media")
    other = "image" if kind == "video" else "video"
    rec[other] = None
    return rec


def metadata(rec: dict) -> dict:
    """What rewards and logs need of a record (no media)."""
    return {k: rec[k] for k in ("id", "source", "problem_type", "problem", "options", "solution", "answer")}


class ListSource:
    """Records held in memory (tests, small manifests)."""

    def __init__(self, name: str, records: list):
        self.name, self._records = name, list(records)

    def __len__(self):
        return len(self._records)

    def __getitem__(self, i):
        return self._records[i]
