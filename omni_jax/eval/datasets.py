"""The evaluation benchmarks as lists of items: HumanOmniV2's layout, local or gs://, or a TFDS build.

    items, skipped = load_bench("intentbench", "/data/eval", limit=100)

ROOT (`data_dir`) holds HumanOmniV2's layout:

    IntentBench/qa.json         + IntentBench/videos/<video>
    Daily-Omni/qa_think.json    + Daily-Omni/videos/<video>
    WorldSense/qa_think.json    + WorldSense/videos/<video>

Rows carry problem, problem_type, options (multiple choice / emer_ov_mc), solution
(`...<answer>X</answer>`), data_type and `video` (or `path`); IntentBench rows also `Type` (the
category) and `qid`. A ROOT without the json but with a TFDS build of IntentBench
(`python -m omni_jax.data.build intentbench`, i.e. `omni_intentbench/` under ROOT) is read from
that build instead (its records do not keep `Type`, so the report has no per-category rows).

Each item is the row as it goes into the results (JSON-able, no media bytes, with a unique `id`:
the row's id / qid, else `<bench>:<index>`) and the record the model reads. A malformed row
(missing fields, no media, a local media file that does not exist) is skipped and listed; an
unknown problem_type is an error naming the row (`scoring.UnknownProblemType`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

from etils import epath

from omni_jax.data import prompt, synthetic
from omni_jax.data.errors import BadRecord
from omni_jax.data.sources import registry, validate_record
from omni_jax.eval import scoring


@dataclasses.dataclass(frozen=True)
class Bench:
    name: str
    folder: str
    annotations: str
    media: str = "videos"
    tfds_builder: str | None = None


BENCHES = {
    "intentbench": Bench("intentbench", "IntentBench", "qa.json", tfds_builder="omni_intentbench"),
    "daily_omni": Bench("daily_omni", "Daily-Omni", "qa_think.json"),
    "worldsense": Bench("worldsense", "WorldSense", "qa_think.json"),
}
ALIASES = {"ib": "intentbench", "daily": "daily_omni", "world": "worldsense", "daily-omni": "daily_omni"}


@dataclasses.dataclass
class Item:
    row: dict  # what the result row starts from: the dataset row's fields (no media bytes) + id
    record: dict  # what the model reads: problem, problem_type, options, video | image, audio
    instruction: str = ""  # appended to the user's text (the instruction-following probe)


def bench_names(text: str) -> list[str]:
    """'intentbench,daily_omni' (or HumanOmniV2's ib / daily / world) -> canonical names."""
    names = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        part = ALIASES.get(part, part)
        if part not in BENCHES:
            raise ValueError(f"unknown benchmark {part!r}; known: {sorted(BENCHES)} (or ib, daily, world)")
        names.append(part)
    return names


def _path(root: str, *parts: str) -> str:
    if "://" in root:
        return "/".join([root.rstrip("/"), *parts])
    return os.path.join(root, *parts)


def _exists(path: str) -> bool:
    if "://" in path:
        return epath.Path(path).exists()
    return os.path.exists(path)


def _read_text(path: str) -> str:
    if "://" in path:
        return epath.Path(path).read_text()
    return pathlib.Path(path).read_text(encoding="utf-8")


def _skip(bench: str, index: int, row_id: str, reason: str, message: str) -> dict:
    return {"bench": bench, "index": index, "id": row_id, "reason": reason, "message": message}


def check_problem_type(problem_type, where: str) -> None:
    """UnknownProblemType naming the row when `problem_type` has no prompt template or no scorer."""
    if problem_type not in scoring.SUPPORTED_TYPES or problem_type not in prompt.TYPE_TEMPLATE:
        raise scoring.UnknownProblemType(
            f"{where}: unknown problem_type {problem_type!r}; supported: "
            f"{sorted(set(scoring.SUPPORTED_TYPES) & set(prompt.TYPE_TEMPLATE))}")


def items_from_rows(bench: str, rows: list, media_root: str, *, where: str = "") -> tuple[list[Item], list[dict]]:
    """Items of HumanOmniV2-style rows (media paths relative to `media_root`), and the skipped rows."""
    items, skipped, seen = [], [], set()
    for index, row in enumerate(rows):
        default_id = f"{bench}:{index}"
        if not isinstance(row, dict):
            skipped.append(_skip(bench, index, default_id, "malformed_row", f"row is a {type(row).__name__}"))
            continue
        row_id = str(row.get("id") or row.get("qid") or default_id)
        if row_id in seen:  # ids key the results and resumption: keep them unique
            row_id = f"{row_id}#{index}"
        seen.add(row_id)
        check_problem_type(row.get("problem_type"), f"{where or bench} row {index} (id {row_id!r})")
        missing = [k for k in ("problem", "solution") if not isinstance(row.get(k), str)]
        options = row.get("options") or []
        if row["problem_type"] in ("multiple choice", "emer_ov_mc") and not options:
            missing.append("options")
        if missing:
            skipped.append(_skip(bench, index, row_id, "malformed_row", f"missing or non-text {missing}"))
            continue
        if scoring.extract_answer(row["solution"]) == "" and not isinstance(row.get("answer"), str):
            skipped.append(_skip(bench, index, row_id, "malformed_row", "no <answer> in the solution"))
            continue
        media = row.get("video") if "video" in row else row.get("path")
        if not isinstance(media, str) or not media:
            skipped.append(_skip(bench, index, row_id, "malformed_row", "no media path ('video' or 'path')"))
            continue
        kind = "image" if row.get("data_type") == "image" else "video"
        full = _path(media_root, media)
        if "://" not in full and not os.path.exists(full):
            skipped.append(_skip(bench, index, row_id, "missing_file", f"{full} does not exist"))
            continue
        result_row = {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool, list, type(None)))}
        result_row.update(id=row_id, bench=bench)
        record = {"problem": row["problem"], "problem_type": row["problem_type"],
                  "options": [str(o) for o in options], kind: full, "audio": None}
        items.append(Item(result_row, record))
    return items, skipped


def load_bench(name: str, data_dir: str, *, limit: int | None = None) -> tuple[list[Item], list[dict]]:
    """The first `limit` (all when None) questions of benchmark `name` under `data_dir`."""
    bench = BENCHES[bench_names(name)[0]]
    qa = _path(data_dir, bench.folder, bench.annotations)
    if _exists(qa):
        try:
            rows = json.loads(_read_text(qa))
        except json.JSONDecodeError as e:
            raise ValueError(f"{qa} is not valid JSON ({e})") from None
        if not isinstance(rows, list):
            raise ValueError(f"{qa} must hold a JSON list of rows, got {type(rows).__name__}")
        rows = rows if limit is None else rows[:limit]
        return items_from_rows(bench.name, rows, _path(data_dir, bench.folder, bench.media), where=qa)
    if bench.tfds_builder and _exists(_path(data_dir, bench.tfds_builder)):
        return _load_tfds(bench, data_dir, limit)
    raise FileNotFoundError(
        f"benchmark {bench.name}: neither {qa} (HumanOmniV2's layout: {bench.folder}/{bench.annotations} + "
        f"{bench.folder}/{bench.media}/)" + (f" nor a TFDS build {_path(data_dir, bench.tfds_builder)}"
                                             if bench.tfds_builder else "") + " exists")


def _load_tfds(bench: Bench, data_dir: str, limit: int | None) -> tuple[list[Item], list[dict]]:
    """IntentBench from its TFDS build (media bytes in the records, or paths for `by_path`)."""
    config = "embedded" if _exists(_path(data_dir, bench.tfds_builder, "embedded")) else "by_path"
    source = registry.TfdsSource(bench.name, bench.tfds_builder, data_dir, split="test", config=config)
    n = len(source) if limit is None else min(limit, len(source))
    items, skipped, seen = [], [], set()
    for index in range(n):
        raw = source[index]
        row_id = raw.get("id") or f"{bench.name}:{index}"
        row_id = row_id.decode("utf-8", "replace") if isinstance(row_id, bytes) else str(row_id)
        if row_id in seen:
            row_id = f"{row_id}#{index}"
        seen.add(row_id)
        problem_type = raw.get("problem_type")
        problem_type = problem_type.decode("utf-8", "replace") if isinstance(problem_type, bytes) else problem_type
        check_problem_type(problem_type, f"{bench.tfds_builder} record {index} (id {row_id!r})")
        try:
            rec = validate_record(raw)
        except BadRecord as e:
            skipped.append(_skip(bench.name, index, row_id, e.reason, str(e)))
            continue
        row = {k: rec[k] for k in ("problem", "problem_type", "options", "solution", "data_type")}
        row.update(id=row_id, bench=bench.name)
        kind = rec["data_type"]
        items.append(Item(row, {"problem": rec["problem"], "problem_type": rec["problem_type"],
                                "options": rec["options"], kind: rec[kind], "audio": rec["audio"]}))
    return items, skipped


def synthetic_items(n: int, seed: int, synthetic_cfg=None) -> list[Item]:
    """`n` generated questions (`omni_jax.data.synthetic`, frames and waveform in memory) drawn with
    `seed`: held out from training when the seed differs from the training data's. `Type` is the
    question's kind."""
    kw = {}
    if synthetic_cfg is not None:
        kw = dict(size=int(synthetic_cfg.size), num_frames=int(synthetic_cfg.num_frames), fps=float(synthetic_cfg.fps))
    items = []
    for i in range(n):
        rec = synthetic.make_record(i, seed, **kw)
        row = {k: rec[k] for k in ("id", "problem", "problem_type", "options", "solution")}
        row.update(bench="synthetic", Type=synthetic.QUESTION_KINDS[i % len(synthetic.QUESTION_KINDS)])
        items.append(Item(row, {"problem": rec["problem"], "problem_type": rec["problem_type"],
                                "options": rec["options"], "video": rec["video"], "video_fps": rec["video_fps"],
                                "audio": rec["audio"]}))
    return items


def items_for_split(split: str, size: int, *, data_dir: str = "", seed: int = 1000,
                    synthetic_cfg=None) -> tuple[list[Item], list[dict]]:
    """The first `size` questions of a training-time eval split: "synthetic" or a benchmark name."""
    if split == "synthetic":
        return synthetic_items(size, seed, synthetic_cfg), []
    return load_bench(split, data_dir, limit=size)
