import json
import re

import pytest

from omni_jax.eval import probe, report, scoring


def result(row_id, reward, category, *, score, judge=None, probe_name=None, probe_ok=None):
    row = {"id": row_id, "problem_type": "multiple choice", "Type": category, "reward": float(reward),
           "reward_humanomniv2": float(reward), "has_think": True, "think_words": 40,
           "people_focus": {"score": score, "action": 1, "environment": 0, "people": 4}}
    if judge is not None:
        row["judge"] = judge
    if probe_name:
        row.update(probe=probe_name, probe_ok=probe_ok, id=f"{row_id}#probe:{probe_name}")
    return row


def checkpoint(social, emotion, score, judge, probes_followed):
    rows = [result(f"q{i}", r, "social", score=score, judge=judge) for i, r in enumerate(social)]
    rows += [result(f"q{i + len(social)}", r, "emotion", score=score, judge=judge) for i, r in enumerate(emotion)]
    rows += [result("q0", 0, "social", score=0.9, probe_name=i.name, probe_ok=i.name in probes_followed)
             for i in probe.INSTRUCTIONS]
    return rows


BEFORE = checkpoint([1, 1, 1, 0, 0, 0], [1, 0, 0, 0], score=0.2, judge=6.0, probes_followed={"people_focus"})
AFTER = checkpoint([1, 1, 1, 1, 0, 0], [1, 1, 0, 0], score=0.5, judge=8.5,
                   probes_followed={"people_focus", "bold", "short_think"})
SKIPPED = {("intentbench", "after"): [{"id": "q10", "reason": "missing video videos/q10.mp4"}]}


def test_summarize_hand_checked_numbers():
    summary = report.summarize(AFTER, SKIPPED[("intentbench", "after")])
    assert summary["n"] == 10 and summary["n_probe"] == 6
    accuracy = summary["accuracy"]
    assert accuracy["mean"] == pytest.approx(0.6) and accuracy["n"] == 10
    assert accuracy["lo"] < 0.6 < accuracy["hi"]
    assert summary["by_category"]["social"]["mean"] == pytest.approx(4 / 6)
    assert summary["by_category"]["emotion"]["mean"] == pytest.approx(0.5)
    assert summary["by_category"]["emotion"]["n"] == 4
    assert summary["by_problem_type"]["multiple choice"]["mean"] == pytest.approx(0.6)
    # people focus over the 10 question rows only (the probe rows' 0.9 is not counted)
    assert summary["people_focus"]["score"] == {"mean": 0.5, "lo": 0.5, "hi": 0.5, "n": 10}
    assert summary["people_focus"]["people"]["mean"] == 4.0
    assert summary["people_focus"]["think_words"]["mean"] == 40.0
    assert summary["people_focus"]["judge"]["mean"] == 8.5
    assert summary["probe"]["overall"]["mean"] == pytest.approx(0.5) and summary["probe"]["overall"]["n"] == 6
    assert summary["probe"]["by_instruction"]["bold"]["mean"] == 1.0
    assert summary["probe"]["by_instruction"]["chinese"]["mean"] == 0.0
    assert summary["skipped"]["count"] == 1 and summary["skipped"]["rows"][0]["id"] == "q10"


def test_summarize_without_probes_judge_or_categories():
    rows = [{k: v for k, v in r.items() if k not in ("Type", "judge")} for r in BEFORE if "probe" not in r]
    summary = report.summarize(rows)
    assert "probe" not in summary and "by_category" not in summary and "judge" not in summary["people_focus"]
    assert summary["skipped"] == {"count": 0, "rows": []}


def test_summarize_and_markdown_of_no_rows():
    summary = report.summarize([])
    assert summary["n"] == 0 and summary["accuracy"] is None and summary["people_focus"]["score"] is None
    assert table_line(report.markdown({("ib", "empty"): []}), "accuracy") == ["—"]


def test_humanomni_json_shape():
    out = report.humanomni_json(BEFORE)
    assert out["final_acc"] == [{"mean_acc": pytest.approx(0.4)}]
    assert [r["id"] for r in out["results"]] == [f"q{i}" for i in range(10)]
    assert len(out["probe_results"]) == 6
    assert report.humanomni_json([]) == {"results": [], "final_acc": [{"mean_acc": None}]}
    json.dumps(out)


def table_line(text, label):
    found = [line for line in text.splitlines() if line.startswith(f"| {label} |")]
    assert len(found) == 1, (label, text)
    return [cell.strip() for cell in found[0].strip("|").split("|")][1:]


def test_markdown_side_by_side_with_paired_differences():
    text = report.markdown({("intentbench", "before"): BEFORE, ("intentbench", "after"): AFTER}, SKIPPED)
    assert "## intentbench" in text
    assert "| metric | before | after | after − before |" in text
    assert table_line(text, "questions scored") == ["10", "10", ""]
    assert table_line(text, "skipped") == ["0", "1", ""]
    before, after, diff = table_line(text, "accuracy")
    assert before.startswith("40.0 [") and after.startswith("60.0 [") and diff.startswith("+20.0 [")
    lo, hi = map(float, re.match(r"\+20\.0 \[([-+\d.]+), ([-+\d.]+)\]$", diff).groups())
    assert 0.0 <= lo < 20.0 < hi <= 50.0  # two questions fixed, none broken: never below 0
    before, after, diff = table_line(text, "category: social (n=6)")
    assert before.startswith("50.0 [") and after.startswith("66.7 [") and diff.startswith("+16.7 [")
    before, after, diff = table_line(text, "category: emotion (n=4)")
    assert before.startswith("25.0 [") and after.startswith("50.0 [") and diff.startswith("+25.0 [")
    assert table_line(text, "people focus score (0–1)") == [
        "0.200 [0.200, 0.200]", "0.500 [0.500, 0.500]", "+0.300 [+0.300, +0.300]"]
    assert table_line(text, "judge rating (0–10)") == [
        "6.00 [6.00, 6.00]", "8.50 [8.50, 8.50]", "+2.50 [+2.50, +2.50]"]
    before, after, diff = table_line(text, "probe: all six")
    assert before.startswith("16.7 [") and after.startswith("50.0 [") and diff.startswith("+33.3 [")
    assert table_line(text, "probe: bold") == [
        "0.0 [0.0, 0.0]", "100.0 [100.0, 100.0]", "+100.0 [+100.0, +100.0]"]
    assert "`q10`: missing video videos/q10.mp4" in text


def test_markdown_pairs_questions_by_id():
    base = [result("a", 1, "x", score=0.1), result("b", 0, "x", score=0.1), result("c", 0, "x", score=0.1)]
    other = [result("c", 1, "x", score=0.1), result("b", 1, "x", score=0.1), result("a", 1, "x", score=0.1),
             result("d", 0, "x", score=0.1)]
    text = report.markdown({("b1", "A"): base, ("b1", "B"): other})
    *_, diff = table_line(text, "accuracy")
    assert diff.startswith("+66.7 [") and diff.endswith("(n=3)")


def test_markdown_of_real_score_rows():
    rows = [{"id": f"r{i}", "problem_type": "judge", "solution": f"<answer>{a}</answer>"}
            for i, a in enumerate(["Yes", "No", "No", "Yes"])]
    outputs = ["<think>The man nods.</think><answer>Yes</answer>", "<answer>I don't know</answer>",
               "<think>The woman frowns.</think><answer>No</answer>", "<answer>yes</answer>"]
    results = [scoring.score_row(r, o) for r, o in zip(rows, outputs)]
    text = report.markdown({("daily_omni", "ckpt"): results})
    assert table_line(text, "accuracy")[0].startswith("75.0 [")
    assert table_line(text, "accuracy, HumanOmniV2's rules")[0].startswith("100.0 [")  # "know" ⊃ "no"
    assert table_line(text, "has a `<think>`")[0].startswith("50.0 [")


def is_png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_write_report_files(tmp_path):
    from matplotlib import image

    results = {("intentbench", "before"): BEFORE, ("intentbench", "after"): AFTER,
               ("daily omni/v2", "before"): [r for r in BEFORE if "probe" not in r]}
    path = report.write_report(tmp_path / "out", results, SKIPPED, n_boot=200)
    assert path == tmp_path / "out" / "report.md"
    text = path.read_text()
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs == ["daily_omni_v2_accuracy.png", "daily_omni_v2_people_focus.png", "intentbench_accuracy.png",
                    "intentbench_people_focus.png", "intentbench_probe.png"]
    for name in pngs:
        assert is_png(tmp_path / "out" / name)
        height, width, _ = image.imread(tmp_path / "out" / name).shape
        assert height >= 300 and width >= 500
        assert f"({name})" in text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["intentbench"]["after"]["accuracy"]["mean"] == pytest.approx(0.6)
    assert summary["daily omni/v2"]["before"]["skipped"]["count"] == 0
