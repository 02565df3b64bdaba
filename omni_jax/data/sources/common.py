"""What the TFDS builders share: the feature spec, the manual_dir row readers, the build loop.

Each builder only says where its rows are and how a row maps to the record schema; reading,
validating, embedding the media bytes, counting and logging skipped rows, and failing when no
row is usable happen here once.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from omni_jax.data import sources
from omni_jax.data.errors import BadRecord, DataError

log = logging.getLogger(__name__)
VERSION = tfds.core.Version("1.0.0")


class MediaConfig(tfds.core.BuilderConfig):
    """embed: store each record's media bytes inside the record (self-contained, GCS-ready);
    otherwise store absolute local paths. max_examples: keep a seeded random sample of rows."""

    def __init__(self, *, embed: bool = True, max_examples: int | None = None, **kwargs):
        super().__init__(version=VERSION, **kwargs)
        self.embed, self.max_examples = embed, max_examples


MEDIA_CONFIGS = [
    MediaConfig(name="embedded", description="media bytes inside each record", embed=True),
    MediaConfig(name="by_path", description="absolute paths to the media under manual_dir", embed=False),
]


def features():
    blob = tfds.features.Tensor(shape=(), dtype=np.object_)
    text = tfds.features.Text()
    return tfds.features.FeaturesDict({
        "id": text, "source": text, "data_type": text,
        "video": blob, "video_path": text, "image": blob, "audio": blob, "audio_path": text,
        "problem": text, "problem_type": text, "options": tfds.features.Sequence(text),
        "solution": text, "answer": text,
    })


def read_json_rows(path: pathlib.Path, lines: bool | None = None):
    """Yield (row number, dict | BadRecord) from a .json list or JSON lines (.jsonl, or lines=True).

    A .jsonl line that is not UTF-8 or not JSON becomes a BadRecord; in a .json list, bytes that
    are not UTF-8 are kept as escapes so that only the records holding them are rejected.
    """
    raw = path.read_bytes()
    if lines or (lines is None and path.suffix == ".jsonl"):
        for n, line in enumerate(raw.splitlines()):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                yield n, BadRecord("non_utf8_text", f"{path}:{n + 1} is not valid UTF-8")
            except json.JSONDecodeError as e:
                yield n, BadRecord("malformed_row", f"{path}:{n + 1}: {e}")
        return
    try:
        rows = json.loads(raw.decode("utf-8", errors="surrogateescape"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e}); fix or remove the file") from None
    if not isinstance(rows, list):
        raise DataError(f"{path} must hold a JSON list of records, got {type(rows).__name__}")
    yield from enumerate(rows)


def humanomni_record(row, source: str, media_root: pathlib.Path, default_id: str) -> dict:
    """A HumanOmniV2 json row (problem, problem_type, options, solution, data_type, path | video)
    -> a record with media as local paths. Raises BadRecord for a row of the wrong shape."""
    if not isinstance(row, dict):
        raise BadRecord("malformed_row", f"row {default_id} is a {type(row).__name__}, not an object")
    rec = {k: row.get(k) for k in ("problem", "problem_type", "options", "solution")}
    rid = row.get("id") or row.get("qid") or default_id
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise BadRecord("malformed_row", f"row {default_id}: 'id' must be text or an integer, got {type(rid).__name__}")
    rec["id"] = str(rid)
    rec["source"] = source
    rec["data_type"] = row.get("data_type") or "video"
    if isinstance(row.get("answer"), str):
        rec["answer"] = row["answer"]
    elif row.get("answer") is not None:
        raise BadRecord("malformed_row", f"row {default_id}: 'answer' must be text, got {type(row['answer']).__name__}")
    media = row.get("path") or row.get("video")
    if isinstance(media, dict):  # HumanOmniV2's image + separate audio rows
        for field in ("image", "audio"):
            value = media.get(field)
            if value and not isinstance(value, str):
                raise BadRecord("malformed_row", f"row {default_id}: path.{field} must be a file path, "
                                f"got {type(value).__name__}")
            rec[field] = str(media_root / value) if value else None
        rec["data_type"] = "image"
    elif isinstance(media, str):
        rec[rec["data_type"] if rec["data_type"] in ("video", "image") else "video"] = str(media_root / media)
    else:
        raise BadRecord("malformed_row", f"row {default_id} has no media path ('path' or 'video')")
    return rec


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise BadRecord("missing_file", f"{path} does not exist")
    if os.path.getsize(path) == 0:
        raise BadRecord("empty_file", f"{path} is a zero-byte file")


def to_example(rec: dict, embed: bool) -> dict:
    """A validated record (media as paths) -> the TFDS feature dict; media read when embedding."""
    ex = {k: rec[k] for k in ("id", "source", "data_type", "problem", "problem_type", "solution", "answer")}
    ex["options"] = rec["options"]
    for field in ("video", "image", "audio"):
        ex[field] = b""
    ex["video_path"] = ex["audio_path"] = ""
    for field in ("video", "image", "audio"):
        path = rec.get(field)
        if path is None:
            continue
        _check_file(path)
        if embed:
            ex[field] = pathlib.Path(path).read_bytes()
        elif field == "image":
            raise BadRecord("malformed_row", "images are always embedded; use the 'embedded' config")
        else:
            ex[f"{field}_path"] = os.path.abspath(path)
    return ex


def generate(rows, *, config: MediaConfig, what: str, seed: int = 0):
    """The build loop: rows of (key, raw record | BadRecord) -> (key, TFDS example), skipping and
    counting bad rows; a build where no row survives raises DataError naming the reasons."""
    rows = list(rows)
    if config.max_examples is not None and len(rows) > config.max_examples:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), config.max_examples, replace=False))
        rows = [rows[k] for k in keep]
    skipped = collections.Counter()
    good = 0
    for key, row in tqdm(rows, desc=f"building {what}", unit="rec"):
        try:
            if isinstance(row, BadRecord):
                raise row
            rec = sources.validate_record(row)
            yield key, to_example(rec, config.embed)
            good += 1
        except BadRecord as e:
            skipped[e.reason] += 1
            log.warning("%s: skipping row %s: %s", what, key, e)
    if skipped:
        log.warning("%s: kept %d rows, skipped %s", what, good, dict(skipped))
    if good == 0:
        raise DataError(f"{what}: none of the {len(rows)} rows is usable (skipped: {dict(skipped)}); "
                        "check the manual_dir layout described in the builder's docstring")


def json_files(root: pathlib.Path) -> list[pathlib.Path]:
    files = sorted(p for p in root.iterdir() if p.suffix in (".json", ".jsonl"))
    if not files:
        raise DataError(f"no .json / .jsonl annotation file at the top of {root}")
    return files


def humanomni_rows(root: pathlib.Path, source: str, files=None, media_root: pathlib.Path | None = None):
    """(key, record | BadRecord) for every row of HumanOmniV2-style annotation files under root."""
    for f in files or json_files(root):
        for n, row in read_json_rows(f):
            key = f"{f.name}:{n}"
            if isinstance(row, BadRecord):
                yield key, row
                continue
            try:
                yield key, humanomni_record(row, source, media_root or root, key)
            except BadRecord as e:
                yield key, e
            except Exception as e:  # any other fault of one row's shape: that row only
                yield key, BadRecord("malformed_row", f"row {key}: {type(e).__name__}: {e}")


class JsonSource:
    """A HumanOmniV2 json/jsonl manifest read directly at run time (no TFDS build).

    Rows are parsed up front (bad rows become BadRecord entries, counted by the mixture when
    drawn); media stay paths under media_root (HumanOmniV2's data_root).
    """

    def __init__(self, name: str, json_path: str, media_root: str):
        root = pathlib.Path(media_root)
        self.name = name
        self._rows = [row for _, row in humanomni_rows(root, name, [pathlib.Path(json_path)], root)]

    def __len__(self):
        return len(self._rows)

    def __getitem__(self, i):
        row = self._rows[i]
        if isinstance(row, BadRecord):
            raise row
        return row


class ManualBuilder(tfds.core.GeneratorBasedBuilder):
    """Base of the manual_dir builders: subclasses set SOURCE and implement `_rows(root, split)`."""

    VERSION = VERSION
    BUILDER_CONFIGS = MEDIA_CONFIGS
    SOURCE = ""
    SPLITS = ("train",)

    def __init_subclass__(cls, **kwargs):
        cls.MANUAL_DOWNLOAD_INSTRUCTIONS = cls.__doc__  # the docstring describes the manual_dir layout
        super().__init_subclass__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=features())

    def _split_generators(self, dl_manager):
        root = pathlib.Path(dl_manager.manual_dir)
        if not root.is_dir():
            raise DataError(f"{self.name}: manual_dir {root} is not a directory; see the layout in the docstring")
        return {s: generate(self._rows(root, s), config=self.builder_config, what=f"{self.name}/{s}")
                for s in self._splits(root)}

    def _splits(self, root: pathlib.Path):
        return self.SPLITS

    def _rows(self, root: pathlib.Path, split: str):
        raise NotImplementedError

    def _generate_examples(self, *args, **kwargs):  # the generators above do the work
        raise NotImplementedError
