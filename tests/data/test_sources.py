import json
import shutil

import numpy as np
import pytest

from omni_jax.data import build, config, example, sources
from omni_jax.data.errors import DataError
from omni_jax.data.sources import common
from omni_jax.data.sources.registry import TfdsSource


def humanomni_row(path, answer="B", problem_type="multiple choice", **extra):
    row = {"problem": "What is the man's emotion?", "problem_type": problem_type,
           "options": ["A. Angry", "B. Happy", "C. Sad", "D. Calm"],
           "solution": f"<context>A man.</context><think>He smiles.</think><answer>{answer}</answer>",
           "data_type": "video", "path": path}
    row.update(extra)
    return row


def read_back(source, builder_name, data_dir, split="train", config_name="embedded"):
    return TfdsSource(source, builder_name, str(data_dir), split=split, config=config_name)


def test_social_iq2_raw_layout(media_dir, tmp_path, caplog):
    root = tmp_path / "siq2"
    (root / "qa").mkdir(parents=True)
    (root / "video").mkdir()
    shutil.copy(media_dir / "av.mp4", root / "video" / "vidA.mp4")
    shutil.copy(media_dir / "silent.mp4", root / "video" / "vidB.mp4")
    rows = [
        {"qid": "q1", "q": "Why does she laugh?", "vid_name": "vidA", "ts": "0:00-1:00", "a0": "x", "a1": "y",
         "a2": "z", "a3": "w", "answer_idx": 2},
        {"qid": "q2", "q": "Is he angry?", "vid_name": "vidB", "ts": "", "a0": "no", "a1": "yes", "a2": "maybe",
         "a3": "never", "answer_idx": 0},
        {"qid": "q3", "q": "Missing video", "vid_name": "nope", "a0": "a", "a1": "b", "a2": "c", "a3": "d",
         "answer_idx": 1},
        {"qid": "q4", "q": "No answers"},  # malformed
    ]
    lines = [json.dumps(r).encode() for r in rows] + [b'{"qid": "q5", "q": "caf\xe9"}', b"{not json"]
    (root / "qa" / "qa_train.json").write_bytes(b"\n".join(lines))
    (root / "qa" / "qa_val.json").write_text(json.dumps(rows[0]) + "\n")
    with caplog.at_level("WARNING"):
        build.build("social_iq2", str(root), str(tmp_path / "tfds"))
    src = read_back("social_iq2", "omni_social_iq2", tmp_path / "tfds")
    recs = sorted((sources.validate_record(src[i]) for i in range(len(src))), key=lambda r: r["id"])
    assert [r["id"] for r in recs] == ["q1", "q2"]
    assert recs[0]["options"] == ["A. x", "B. y", "C. z", "D. w"] and recs[0]["answer"] == "C"
    assert recs[0]["solution"] == "<answer>C</answer>" and recs[0]["problem_type"] == "multiple choice"
    assert recs[0]["video"] == (media_dir / "av.mp4").read_bytes()  # embedded
    assert len(read_back("social_iq2", "omni_social_iq2", tmp_path / "tfds", split="validation")) == 1
    log = caplog.text
    for reason in ("missing_file", "malformed_row", "non_utf8_text"):
        assert reason in log
    # a record read back prepares end to end
    cfg = config.data_defaults()
    cfg.max_frames, cfg.max_pixels = 4, 112 * 112
    out = example.prepare_record(recs[0], cfg)
    assert out["video_grid_thw"].shape == (1, 3) and out["record"]["answer"] == "C"


@pytest.mark.parametrize("source,builder_name", [("emer", "omni_emer"), ("video_r1", "omni_video_r1")])
def test_humanomni_json_layouts(media_dir, tmp_path, source, builder_name):
    root = tmp_path / source
    (root / "MER24").mkdir(parents=True)
    shutil.copy(media_dir / "av.mp4", root / "MER24" / "sample_0.mp4")
    from PIL import Image

    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(root / "img.png")
    rows = [humanomni_row("MER24/sample_0.mp4", answer="B,C", problem_type="emer_ov_mc", answer_field="x"),
            humanomni_row("img.png", problem_type="numerical", data_type="image", options=[], answer=""),
            humanomni_row("MER24/missing.mp4"),
            {"problem": "no type", "path": "MER24/sample_0.mp4"}]
    rows[1]["solution"] = "<answer>3</answer>"
    (root / "train.json").write_text(json.dumps(rows))
    build.build(source, str(root), str(tmp_path / "tfds"))
    src = read_back(source, builder_name, tmp_path / "tfds")
    recs = {r["data_type"]: r for r in (sources.validate_record(src[i]) for i in range(len(src)))}
    assert set(recs) == {"video", "image"}
    assert recs["video"]["answer"] == "B,C" and recs["video"]["problem_type"] == "emer_ov_mc"
    assert recs["video"]["source"] == source
    assert recs["image"]["answer"] == "3" and recs["image"]["image"] == (root / "img.png").read_bytes()
    out = example.prepare_record(recs["image"], config.data_defaults())
    assert out["image_grid_thw"].shape == (1, 3)


def test_intentbench_layout_by_path(media_dir, tmp_path):
    root = tmp_path / "IntentBench"
    (root / "videos").mkdir(parents=True)
    shutil.copy(media_dir / "av.mp4", root / "videos" / "clip1.mp4")
    rows = [{"problem": "Why is she lying?", "problem_type": "multiple choice", "options": ["A.fear", "B.joy"],
             "solution": "<answer>A</answer>", "data_type": "video", "video": "clip1.mp4", "Type": "deception",
             "qid": 7}]
    (root / "qa.json").write_text(json.dumps(rows))
    build.build("intentbench", str(root), str(tmp_path / "tfds"), config="by_path")
    src = read_back("intentbench", "omni_intentbench", tmp_path / "tfds", split="test", config_name="by_path")
    rec = sources.validate_record(src[0])
    assert rec["id"] == "7" and rec["answer"] == "A"
    assert rec["video"] == str((root / "videos" / "clip1.mp4").resolve())


def test_build_with_no_usable_row_fails_fast(tmp_path):
    root = tmp_path / "emer"
    root.mkdir()
    (root / "a.json").write_text(json.dumps([humanomni_row("gone.mp4"), humanomni_row("also_gone.mp4")]))
    with pytest.raises(DataError, match="none of the 2 rows is usable"):
        build.build("emer", str(root), str(tmp_path / "tfds"))


def test_synthetic_tfds_round_trip(tmp_path):
    from omni_jax.data import synthetic

    build.build("synthetic_tfds", None, str(tmp_path / "tfds"), config="small")
    src = read_back("synthetic", "omni_synthetic", tmp_path / "tfds", config_name="small")
    assert len(src) == 256
    rec = sources.validate_record(src[0])
    want = synthetic.make_record(int(rec["id"].rsplit("-", 1)[1]))
    np.testing.assert_array_equal(rec["video"], want["video"])
    np.testing.assert_array_equal(rec["audio"], want["audio"])
    assert rec["answer"] == want["answer"]


def test_json_source_reads_manifest_at_run_time(media_dir, tmp_path):
    shutil.copy(media_dir / "av.mp4", tmp_path / "v.mp4")
    (tmp_path / "m.jsonl").write_text(json.dumps(humanomni_row("v.mp4")) + "\n")
    src = common.JsonSource("social_iq2", str(tmp_path / "m.jsonl"), str(tmp_path))
    rec = sources.validate_record(src[0])
    assert rec["video"] == str(tmp_path / "v.mp4") and rec["answer"] == "B"


def test_open_source_by_config(media_dir, tmp_path):
    from omni_jax.data import synthetic
    from omni_jax.data.sources.registry import open_source

    cfg = config.data_defaults()
    shutil.copy(media_dir / "av.mp4", tmp_path / "v.mp4")
    (tmp_path / "emer.json").write_text(json.dumps([humanomni_row("v.mp4")]))
    cfg.manifests.emer = str(tmp_path / "emer.json")
    assert sources.validate_record(open_source("emer", cfg)[0])["video"] == str(tmp_path / "v.mp4")
    assert isinstance(open_source("synthetic", cfg), synthetic.SyntheticSource)
    cfg.data_dir = str(tmp_path / "nothing_here")
    with pytest.raises(DataError, match="build it first"):
        open_source("social_iq2", cfg)
    with pytest.raises(DataError, match="unknown source"):
        open_source("nope", cfg)


def test_a_problem_type_without_an_accuracy_rule_is_a_malformed_row():
    # "emer_ov" has a prompt template but no reward rule: refused when read (a counted skip),
    # not mid-run inside the reward function.
    from omni_jax.data.errors import BadRecord

    sources.validate_record(humanomni_row("a.mp4", answer="A,B", problem_type="emer_ov_mc", id="r1", video="a.mp4"))
    with pytest.raises(BadRecord, match="has no accuracy rule") as e:
        sources.validate_record(humanomni_row("a.mp4", answer="happy", problem_type="emer_ov", id="r2", video="a.mp4"))
    assert e.value.reason == "malformed_row"
