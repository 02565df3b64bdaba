"""python -m omni_jax.eval: two checkpoints side by side, resume, bad rows, and greedy parity with
transformers, on a synthetic IntentBench-shaped set of real mp4 files."""

import json

import numpy as np
import pytest

from omni_jax.eval import __main__ as eval_cli
from omni_jax.eval import checkpoints, datasets, runner, scoring
from tests.eval.conftest import QUESTIONS, qa_rows, write_rows

NEW = 8  # new tokens per answer: every test decodes at the same shapes (one compilation)
BATCH = 4


def _run(loaded, items, path=None, **kw):
    return runner.evaluate(loaded.model, loaded.tokenizer, loaded.data_cfg, items, results_path=path,
                           batch_size=BATCH, max_new_tokens=NEW, progress=False, **kw)


@pytest.fixture(scope="module")
def step0(tiny_store):
    return checkpoints.open_checkpoint(f"{tiny_store}@0", progress=False)


def test_two_checkpoints_side_by_side(tiny_store, bench_root, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--ckpt", f"warm={tiny_store}@0", "--ckpt", f"final={tiny_store}@1", "--bench", "ib",
            "--data_dir", str(bench_root), "--out", str(out), "--max_new_tokens", str(NEW),
            "--batch_size", str(BATCH), "--probe", "1"]
    assert eval_cli.main(argv) == 0
    for name in ("warm", "final"):
        lines = (out / f"intentbench_{name}.jsonl").read_text().splitlines()
        assert len(lines) == QUESTIONS + 6  # the questions and one per probe instruction
        payload = json.loads((out / f"intentbench_{name}.json").read_text())
        rewards = [r["reward"] for r in payload["results"]]
        assert len(rewards) == QUESTIONS and payload["skipped"] == []
        assert payload["final_acc"][0]["mean_acc"] == pytest.approx(np.mean(rewards))
        assert {r["id"] for r in payload["results"]} == {f"synthetic-1000-{i}" for i in range(QUESTIONS)}
        assert len(payload["probe_results"]) == 6
    report = (out / "report.md").read_text()
    assert "| warm | final | final − warm |" in report.replace("metric | ", "")
    assert (out / "intentbench_accuracy.png").stat().st_size > 1000
    # The two checkpoints hold different weights: they answer differently.
    warm = [json.loads(l)["output"] for l in (out / "intentbench_warm.jsonl").read_text().splitlines()]
    final = [json.loads(l)["output"] for l in (out / "intentbench_final.jsonl").read_text().splitlines()]
    assert warm != final
    assert "report:" in capsys.readouterr().out


def test_resume_after_interruption_does_not_redo_questions(step0, bench_root, tmp_path, monkeypatch):
    items, _ = datasets.load_bench("intentbench", str(bench_root))
    path = tmp_path / "intentbench_step0.jsonl"
    calls = []
    real_generate = runner.generate

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second batch
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(runner, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(step0, items, path)
    first = [json.loads(l) for l in path.read_text().splitlines()]
    assert [r["id"] for r in first] == [it.row["id"] for it in items[:BATCH]]
    with open(path, "a") as f:
        f.write('{"id": "synthetic-1000-5", "outp')  # a line torn by a kill -9: ignored, redone
    calls.clear()
    monkeypatch.setattr(runner, "generate", lambda *a, **k: (calls.append(1), real_generate(*a, **k))[1])
    out = _run(step0, items, path)
    assert len(calls) == 1 and out.new == QUESTIONS - BATCH
    assert [r["id"] for r in out.results] == [it.row["id"] for it in items]
    assert out.results[:BATCH] == first  # read back, not redone
    rows = runner.read_results(path)
    assert sorted(r["id"] for r in rows) == sorted(it.row["id"] for it in items)  # no duplicates, torn line gone
    fresh = _run(step0, items)  # the same answers as an uninterrupted run
    assert [r["output"] for r in fresh.results] == [r["output"] for r in out.results]


def test_bad_media_and_malformed_rows_are_skipped_and_listed(step0, bench_copy):
    rows = qa_rows(bench_copy)
    videos = bench_copy / "IntentBench" / "videos"
    (videos / rows[0]["video"]).unlink()  # missing
    (videos / rows[1]["video"]).write_bytes(b"not an mp4 at all" * 50)  # corrupt
    (videos / rows[2]["video"]).write_bytes(b"")  # empty
    del rows[3]["solution"]  # malformed
    write_rows(bench_copy, rows)
    items, skipped = datasets.load_bench("intentbench", str(bench_copy))
    out = _run(step0, items)
    reasons = {s["id"]: s["reason"] for s in skipped + out.skipped}
    assert reasons == {rows[0]["qid"]: "missing_file", rows[1]["qid"]: "corrupt_container",
                       rows[2]["qid"]: "empty_file", rows[3]["qid"]: "malformed_row"}
    assert [r["id"] for r in out.results] == [rows[4]["qid"], rows[5]["qid"]]


def test_unknown_problem_type_is_an_error_naming_the_row(bench_copy):
    rows = qa_rows(bench_copy)
    rows[2]["problem_type"] = "essay"
    write_rows(bench_copy, rows)
    with pytest.raises(scoring.UnknownProblemType, match=r"row 2 \(id 'synthetic-1000-2'\).*'essay'"):
        datasets.load_bench("intentbench", str(bench_copy))


def test_limit_and_missing_benchmark(bench_root, tmp_path):
    items, _ = datasets.load_bench("ib", str(bench_root), limit=2)
    assert [it.row["id"] for it in items] == ["synthetic-1000-0", "synthetic-1000-1"]
    assert items[0].row["Type"] == "colour"
    with pytest.raises(FileNotFoundError, match="Daily-Omni/qa_think.json"):
        datasets.load_bench("daily_omni", str(tmp_path))


def test_greedy_eval_equals_transformers_generate(tiny_store, step0, bench_root, tmp_path):
    """The whole path (mp4 → processor inputs → batched, left-padded generate) against transformers'
    generate on the same weights (the checkpoint exported to HF) and the same processor inputs."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from omni_jax.convert.orbax_to_hf import orbax_to_hf

    orbax_to_hf(str(tiny_store), tmp_path / "hf", step=0, progress=False)
    hf = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        tmp_path / "hf", attn_implementation="eager", dtype=torch.float32).eval()
    items, _ = datasets.load_bench("intentbench", str(bench_root), limit=3)
    ours = _run(step0, items)
    tok = step0.tokenizer
    assert len({r["output"] for r in ours.results}) > 1, "identical answers: a weak comparison"
    for item, row in zip(items, ours.results):
        example = runner.prepare_item(item, step0.data_cfg, tok)
        example.pop("record")
        example.pop("use_audio_in_video")
        inputs = {k: torch.from_numpy(np.asarray(v, np.int64 if np.asarray(v).dtype.kind == "i" else None))
                  for k, v in example.items()}
        with torch.no_grad():
            out = hf.generate(**inputs, use_audio_in_video=False, max_new_tokens=NEW, do_sample=False,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        ids = out[0, example["input_ids"].shape[1]:].tolist()
        if tok.eos_token_id in ids:
            ids = ids[: ids.index(tok.eos_token_id) + 1]
        assert row["completion_tokens"] == len(ids)
        assert row["output"] == tok.decode(ids, skip_special_tokens=True)


def test_a_tfds_build_of_intentbench_gives_the_same_answers(step0, bench_root, tmp_path):
    from omni_jax.data import build

    build.build("intentbench", str(bench_root / "IntentBench"), str(tmp_path / "tfds"))  # media bytes inside
    from_tfds, skipped = datasets.load_bench("intentbench", str(tmp_path / "tfds"))
    from_json, _ = datasets.load_bench("intentbench", str(bench_root))
    assert not skipped and isinstance(from_tfds[0].record["video"], bytes)
    assert sorted(it.row["id"] for it in from_tfds) == sorted(it.row["id"] for it in from_json)
    answers = {r["id"]: r["output"] for r in _run(step0, from_json).results}
    assert {r["id"]: r["output"] for r in _run(step0, from_tfds).results} == answers


def test_a_missing_checkpoint_stops_before_anything_runs(tiny_store, bench_root, tmp_path):
    from omni_jax.eval import suite

    with pytest.raises(FileNotFoundError, match="step 7"):
        suite.run_suite([f"{tiny_store}@0", f"{tiny_store}@7"], ["intentbench"], data_dir=str(bench_root),
                        out_dir=str(tmp_path / "out"))
    assert not list((tmp_path / "out").glob("*.jsonl"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        checkpoints.check_exists(str(tmp_path))
