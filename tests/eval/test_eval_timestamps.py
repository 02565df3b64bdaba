"""python -m omni_jax.eval --timestamps --clip DIR: answers are post-processed before scoring, the
probe's timestamps check passes on the post-processed answers, and the model's own answer is kept."""

import json

import pytest

from omni_jax.eval import __main__ as eval_cli
from omni_jax.eval import probe, runner

NEW, BATCH = 8, 4  # the shapes of test_eval.py (one compilation when run together)
# The tiny model's own answers are noise: decoding is replaced by a fixed answer whose <think>
# has two events and no timestamp.
ANSWER = ("<context>Two people.</context><think>The man smiles at the woman. She waves a hand.</think>"
          "<answer>A</answer>")


def test_eval_timestamps_flag_scores_post_processed_answers(tiny_store, bench_root, tmp_path, monkeypatch, capsys):
    from tests.clip.tiny_clip import save_tiny_clip_dir

    save_tiny_clip_dir(tmp_path / "clip")
    real_generate = runner.generate
    decoded = []

    def generate(model, inputs, **kw):  # run the real decode, remember the batch size it answered
        out = real_generate(model, inputs, **kw)
        decoded.append(out.tokens.shape[0])
        return out

    monkeypatch.setattr(runner, "generate", generate)
    from omni_jax.eval import checkpoints

    real_open = checkpoints.open_checkpoint

    def open_checkpoint(*a, **k):
        loaded = real_open(*a, **k)
        monkeypatch.setattr(loaded.tokenizer, "batch_decode", lambda seqs, **_: [ANSWER] * len(seqs))
        return loaded

    monkeypatch.setattr(checkpoints, "open_checkpoint", open_checkpoint)
    out = tmp_path / "out"
    argv = ["--ckpt", f"ts={tiny_store}@0", "--bench", "ib", "--data_dir", str(bench_root), "--out", str(out),
            "--limit", "2", "--max_new_tokens", str(NEW), "--batch_size", str(BATCH), "--probe", "1",
            "--timestamps", "--clip", str(tmp_path / "clip")]
    assert eval_cli.main(argv) == 0
    assert decoded  # the model did answer
    rows = [json.loads(l) for l in (out / "intentbench_ts.jsonl").read_text().splitlines()]
    assert len(rows) == 2 + 6
    for row in rows:
        assert row["output_raw"] == ANSWER  # the model's own answer, kept
        assert row["output"] != ANSWER and row["output"].count("[Frame ") == 2
        assert len(row["timestamps"]["events"]) == 2 and row["prediction"] == "A"
    (ts_row,) = [r for r in rows if r.get("probe") == "timestamps"]
    assert ts_row["probe_ok"] is True
    assert not probe.check("timestamps", ts_row["output_raw"])  # the raw answer would have failed
    report = (out / "report.md").read_text()
    lines = [l for l in report.splitlines() if "probe: timestamps" in l]
    assert lines and all(l.split("|")[2].strip().startswith("100.0 ") for l in lines)  # the report's table
    with pytest.raises(SystemExit, match="--clip"):
        eval_cli.main(argv[:-2])  # --timestamps without --clip


def test_postprocess_leaves_answers_without_flag_or_video_unchanged():
    item = type("I", (), {"record": {"video": "v.mp4"}})()
    assert runner.postprocess(None, item, ANSWER) == (ANSWER, None)
    image_item = type("I", (), {"record": {"image": "a.png", "video": None}})()
    calls = []
    output, table = runner.postprocess(lambda *a: calls.append(a), image_item, ANSWER)
    assert output == ANSWER and table["events"] == [] and not calls
