"""Every bad input of the issue, end to end: a manifest read at run time, through the mixture."""

import json
import re
import threading
import shutil

import numpy as np

import pytest

from omni_jax.data import config, mixture
from omni_jax.data.errors import BadRecord, DataError
from omni_jax.data.sources import common


def row(path, problem="What is shown?"):
    return {"problem": problem, "problem_type": "multiple choice", "options": ["A. bars", "B. cats"],
            "solution": "<answer>A</answer>", "data_type": "video", "path": path}


def small_cfg():
    cfg = config.data_defaults()
    cfg.max_frames, cfg.min_pixels, cfg.max_pixels = 4, 3136, 56 * 56
    cfg.max_prompt_tokens, cfg.prompt_buckets = 2048, (1024, 2048)
    cfg.batch_size, cfg.num_workers, cfg.mixture = 1, 2, {"manifest": 1.0}
    return cfg


def test_each_bad_record_is_skipped_with_its_reason(media_dir, tmp_path):
    for name in ("av.mp4", "empty.mp4", "garbage.mp4", "tone.m4a", "silent.mp4"):
        shutil.copy(media_dir / name, tmp_path / name)
    lines = [json.dumps(row("av.mp4")).encode(),
             json.dumps(row("missing.mp4")).encode(),
             json.dumps(row("empty.mp4")).encode(),
             json.dumps(row("garbage.mp4")).encode(),
             json.dumps(row("tone.m4a")).encode(),
             json.dumps({"problem": "no type or media"}).encode(),
             b'{"problem": "caf\xe9", "problem_type": "free-form", "solution": "<answer>x</answer>", "path": "av.mp4"}',
             json.dumps(row("av.mp4", problem="word " * 3000)).encode(),
             json.dumps(row("silent.mp4")).encode()]  # no audio track: fine
    (tmp_path / "m.jsonl").write_bytes(b"\n".join(lines))
    src = common.JsonSource("manifest", str(tmp_path / "m.jsonl"), str(tmp_path))
    m = mixture.from_config(small_cfg(), process_index=0, process_count=1, sources={"manifest": src})
    batches = [next(m) for _ in range(6)]  # three epochs of the two good records
    counts = m.counters()
    m.close()
    assert {b["records"][0]["id"] for b in batches} == {"m.jsonl:0", "m.jsonl:8"}
    reasons = {k.split("/")[2] for k in counts if k.startswith("skipped/")}
    assert reasons == {"missing_file", "empty_file", "corrupt_container", "no_video_stream", "malformed_row",
                       "non_utf8_text", "prompt_over_cap"}
    assert counts["examples/manifest"] == 6


def test_source_with_only_bad_records_fails_fast(media_dir, tmp_path):
    (tmp_path / "m.json").write_text(json.dumps([row(f"gone{i}.mp4") for i in range(1000)]))
    src = common.JsonSource("manifest", str(tmp_path / "m.json"), str(tmp_path))
    cfg = small_cfg()
    m = mixture.from_config(cfg, process_index=0, process_count=1, sources={"manifest": src})
    with pytest.raises(DataError, match=r"source 'manifest': the first 32 records read were all bad \({'missing_file': 32}\)"):
        next(m)


# Values of the wrong type for every field of a manifest row; each must be a counted skip of that
# row, never an exception out of the mixture.
WRONG = [123, 1.5, True, ["x", 1], {"a": 1}, {"image": 5}, {"image": ["a"]}, [[1]]]
FIELDS = ["problem", "problem_type", "options", "solution", "data_type", "path", "answer", "id"]


def test_wrong_types_in_any_field_are_malformed_row_skips(media_dir, tmp_path, caplog):
    shutil.copy(media_dir / "av.mp4", tmp_path / "av.mp4")
    good = row("av.mp4")
    rows = [good]
    for field in FIELDS:
        for value in WRONG:
            if field in ("id", "data_type") and isinstance(value, (int, float, bool)):
                continue  # an id / data_type of 123 is read as text ("123") or means "video": not wrong
            rows.append({**good, field: value})
    rows.append({**good, "path": {"image": "av.mp4", "audio": 7}})
    (tmp_path / "m.json").write_text(json.dumps(rows))
    src = common.JsonSource("manifest", str(tmp_path / "m.json"), str(tmp_path))
    cfg = small_cfg()
    cfg.fail_fast_bad_records = 10_000  # one good row among many bad ones on purpose
    m = mixture.from_config(cfg, process_index=0, process_count=1, sources={"manifest": src})
    with caplog.at_level("WARNING", logger="omni_jax.data.mixture"):
        batches = [next(m) for _ in range(2)]  # the one good row, in two epochs: every row drawn
    counts = m.counters()
    m.close()
    assert [b["records"][0]["id"] for b in batches] == ["m.json:0", "m.json:0"]
    skipped = {k: v for k, v in counts.items() if k.startswith("skipped/")}
    # Each bad row once per epoch (at least one whole epoch and the part of the next read ahead).
    assert sum(skipped.values()) >= len(rows) - 1
    assert set(skipped) <= {"skipped/manifest/malformed_row", "skipped/manifest/missing_file"}, skipped
    assert skipped["skipped/manifest/malformed_row"] >= len(rows) - 2
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "of source manifest" in messages and "row m.json:5" in messages  # names the source and the row


def test_wrong_types_reaching_the_preparation_are_skips_not_crashes():
    """A source yielding records of any shape (not only manifests): the mixture skips and counts them."""
    from omni_jax.data.sources import ListSource

    def prepare(raw):
        if raw["n"] % 2:
            return {"input_ids": [[1, 2]]}["input_ids"] + raw["n"]  # TypeError, as a bad field would raise
        return {"input_ids": np.ones((1, 4), np.int32), "attention_mask": np.ones((1, 4), np.int32),
                "use_audio_in_video": False, "record": {"id": raw["n"]}}

    m = mixture.Mixture({"s": ListSource("s", [{"n": i} for i in range(10)])}, {"s": 1.0}, prepare, batch_size=2,
                        buckets=(8,), pad_token_id=0)
    batches = [next(m) for _ in range(3)]
    counts = m.counters()
    m.close()
    assert all(r["id"] % 2 == 0 for b in batches for r in b["records"])
    assert counts["skipped/s/malformed_row"] >= 5


def test_files_deleted_mid_run_stop_the_run_with_a_clear_error(media_dir, tmp_path):
    for i in range(6):
        shutil.copy(media_dir / "av.mp4", tmp_path / f"v{i}.mp4")
    (tmp_path / "m.json").write_text(json.dumps([row(f"v{i}.mp4") for i in range(6)]))
    src = common.JsonSource("manifest", str(tmp_path / "m.json"), str(tmp_path))
    cfg = small_cfg()
    cfg.fail_fast_bad_records = 8
    m = mixture.from_config(cfg, process_index=0, process_count=1, sources={"manifest": src})
    next(m)
    for i in range(6):
        (tmp_path / f"v{i}.mp4").unlink()
    outcome = []

    def read():  # at most a few prefetched batches come first, then the error
        try:
            for _ in range(20):
                next(m)
        except Exception as e:
            outcome.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    m._stop.set()  # a reader that never returned must not spin on after the test
    assert outcome, "the reader still spins 30 s after every file of the source was deleted"
    assert isinstance(outcome[0], DataError)
    # Mostly missing_file; a record being decoded when its file went away may read as corrupt_container.
    assert re.search(r"source 'manifest': the last 8 records read were all bad \(\{.*'missing_file': [1-8]",
                     str(outcome[0])), outcome[0]
    m.close()


def _until_error(m, seconds=30):
    """Batches read from m until it raises; fails if it neither raises nor stops within `seconds`."""
    out = {"states": []}

    def read():
        try:
            while True:
                next(m)
                out["states"].append(m.state())
        except Exception as e:
            out["error"] = e

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    m._stop.set()
    assert "error" in out, f"the reader still spins after {seconds} s"
    return out


def test_resume_inside_a_run_of_bad_records_stops_at_the_same_record():
    from omni_jax.data.sources import ListSource

    def prepare(raw):
        if raw["n"] >= 4:
            raise BadRecord("missing_file", f"record {raw['n']}")
        return {"input_ids": np.ones((1, 4), np.int32), "attention_mask": np.ones((1, 4), np.int32),
                "use_audio_in_video": False, "record": {"id": raw["n"]}}

    def make():
        return mixture.Mixture({"s": ListSource("s", [{"n": i} for i in range(40)])}, {"s": 1.0}, prepare,
                               batch_size=1, buckets=(8,), pad_token_id=0, fail_fast_bad_records=12)

    a = make()
    first = _until_error(a)
    a.close()
    assert isinstance(first["error"], DataError) and "records read were all bad" in str(first["error"])
    b = make()
    b.restore(first["states"][-1])  # after the last good record
    second = _until_error(b)
    b.close()
    assert str(second["error"]) == str(first["error"])
