"""Every bad input of the issue, end to end: a manifest read at run time, through the mixture."""

import json
import shutil

import pytest

from omni_jax.data import config, mixture
from omni_jax.data.errors import DataError
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
