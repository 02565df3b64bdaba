import pytest

from omni_jax.eval import scoring
from omni_jax.rewards import accuracy


def completion(answer, think="The man looks at the woman."):
    return f"<context>A room.</context><think>{think}</think><answer>{answer}</answer>"


def test_extract_answer_first_block_stripped_or_empty():
    assert scoring.extract_answer("<answer>\n  B \n</answer> <answer>C</answer>") == "B"
    assert scoring.extract_answer("<think>no answer here</think>") == ""
    assert scoring.extract_answer("<answer>unclosed") == ""


@pytest.mark.parametrize(
    "problem_type, truth, prediction, ours, humanomniv2",
    [
        # multiple choice: exact after strip, case and punctuation count (both rules)
        ("multiple choice", "A", "A", 1.0, 1.0),
        ("multiple choice", "A", " A ", 1.0, 1.0),
        ("multiple choice", "A", "A.", 0.0, 0.0),
        ("multiple choice", "A", "a", 0.0, 0.0),
        ("multiple choice", "A", "B", 0.0, 0.0),
        # numerical: "."/"," presence must agree, then round(…, 2) (both rules)
        ("numerical", "3", "3", 1.0, 1.0),
        ("numerical", "3", "3.0", 0.0, 0.0),
        ("numerical", "1000", "1,000", 0.0, 0.0),
        ("numerical", "3.14", "3.141", 1.0, 1.0),
        ("numerical", "3.14", "3.146", 0.0, 0.0),  # 3.15 after rounding
        ("numerical", "1,000.5", "1000.50", 1.0, 1.0),
        ("numerical", "3", "three", 0.0, 0.0),
        # regression: mean relative accuracy over θ = .50….95, |p−t|/|t| < 1−θ (both rules)
        ("regression", "10", "10", 1.0, 1.0),
        ("regression", "10", "8", 0.6, 0.6),  # rel .2 < 1−θ for θ ≤ .75: 6 of 10
        ("regression", "10", "5.5", 0.1, 0.1),  # rel .45 < .5 only (.45 < .45 is false)
        ("regression", "10", "16", 0.0, 0.0),
        ("regression", "-4", "-3", 0.5, 0.5),  # rel .25 < 1−θ for θ ≤ .70: 5 of 10
        ("regression", "0", "0", 1.0, 1.0),
        ("regression", "0", "0.001", 0.0, 0.0),
        ("regression", "10", "ten", 0.0, 0.0),
        # emer_ov_mc: F1 of label sets; HumanOmniV2 did not strip labels nor drop duplicates
        ("emer_ov_mc", "A,E", "A,E", 1.0, 1.0),
        ("emer_ov_mc", "A,E", "E,A", 1.0, 1.0),
        ("emer_ov_mc", "A,E", "A, E", 1.0, 0.5),  # " E" ≠ "E": tp 1, P = R = 1/2
        ("emer_ov_mc", "A", "A,A", 1.0, 2 / 3),  # P = 1/2 (list length 2), R = 1
        ("emer_ov_mc", "A,E", "A,E,", 1.0, 0.8),  # "" is a label: P = 2/3, R = 1
        ("emer_ov_mc", "A,B,C", "A,D", 0.4, 0.4),  # P = 1/2, R = 1/3
        ("emer_ov_mc", "A,B", "C", 0.0, 0.0),
        # judge: first whole word yes/no; HumanOmniV2 tested substrings ("know", "not" hold "no")
        ("judge", "Yes", "yes", 1.0, 1.0),
        ("judge", "No", "No.", 1.0, 1.0),
        ("judge", "Yes", "No", 0.0, 0.0),
        ("judge", "No", "I don't know", 0.0, 1.0),
        ("judge", "No", "Yes, though not entirely", 0.0, 1.0),
        ("judge", "Yes", "Yes, but not entirely", 1.0, 1.0),
        # other types: training rules here; HumanOmniV2's eval scored them 0
        ("free-form", "The red car.", "red car", 1.0, 0.0),
        ("OCR", "the cat sat", "the dog sat", 2 / 3, 0.0),
    ],
)
def test_rules_against_hand_worked_cases(problem_type, truth, prediction, ours, humanomniv2):
    assert scoring.score(problem_type, prediction, truth) == pytest.approx(ours, abs=1e-6)
    assert scoring.score_humanomniv2(problem_type, prediction, truth) == pytest.approx(humanomniv2, abs=1e-6)


def test_regression_differs_from_training_reward():
    # Training: 1 − relative error = 0.8; eval: mean relative accuracy = 0.6.
    assert accuracy.score("regression", "8", "10")[0] == pytest.approx(0.8)
    assert scoring.score("regression", "8", "10") == pytest.approx(0.6)


def test_mean_relative_accuracy_equals_humanomniv2_torch_code_at_the_boundaries():
    torch = pytest.importorskip("torch")

    def reference(pred, target):  # HumanOmniV2's formula, float32 torch
        pred, target = torch.tensor(pred, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)
        rel = torch.abs(pred - target) / (torch.abs(target) + 1e-8)
        thresholds = torch.arange(0.5, 0.95 + 0.05 / 2, 0.05, dtype=torch.float32)
        return (rel < (1 - thresholds)).float().mean().item()

    targets = [10.0, 3.0, 0.7, 100.0, -4.0, 1e-3, 7.3]
    cases = [(t * (1 + sign * k * 0.05), t) for t in targets for k in range(12) for sign in (-1, 1)]
    cases += [(0.0, 0.0), (0.001, 0.0), (5.5, 10.0), (14.5, 10.0), (1.3, 1.0)]
    mismatches = [(p, t) for p, t in cases if scoring.mean_relative_accuracy(p, t) != reference(p, t)]
    assert not mismatches
    values = {scoring.mean_relative_accuracy(p, t) for p, t in cases}
    assert len(values) >= 8  # the grid really crosses the thresholds


@pytest.mark.parametrize("problem_type", scoring.SUPPORTED_TYPES)
def test_empty_prediction_scores_zero(problem_type):
    assert scoring.score(problem_type, "", "A") == 0.0
    assert scoring.score(problem_type, "  ", "0") == 0.0


def test_unknown_problem_type_raises():
    with pytest.raises(scoring.UnknownProblemType, match="open-ended"):
        scoring.score("open-ended", "A", "A")
    assert issubclass(scoring.UnknownProblemType, ValueError)


def row(problem_type="multiple choice", answer="B", **fields):
    return {"id": "q7", "problem_type": problem_type, "problem": "Why?", "solution": f"<answer>{answer}</answer>",
            "Type": "social", **fields}


def test_score_row_fields_hand_worked():
    source = row()
    think = "The man smiles at the woman and nods."
    result = scoring.score_row(source, completion("B", think))
    assert "output" not in source  # a new dict, the row is untouched
    assert result["id"] == "q7" and result["Type"] == "social" and result["problem"] == "Why?"
    assert result["output"] == completion("B", think)
    assert result["prediction"] == "B" and result["ground_truth"] == "B"
    assert result["reward"] == 1.0 and result["reward_humanomniv2"] == 1.0
    assert result["has_think"] is True
    assert result["think_words"] == 8
    # people: man, woman (+1 each); action: smiles, nods (+0.5 each) → 3 / 20
    assert result["people_focus"] == {"score": pytest.approx(0.15), "people": 2, "action": 2, "environment": 0}
    assert "probe_ok" not in result


def test_score_row_without_think_or_answer():
    result = scoring.score_row(row(), "The answer is B because the man smiles.")
    assert result["prediction"] == "" and result["reward"] == 0.0
    assert result["has_think"] is False and result["think_words"] == 0
    assert result["people_focus"] == {"score": 0.0, "people": 0, "action": 0, "environment": 0}


def test_empty_answer_is_not_replaced_by_another_completion():
    # HumanOmniV2 replaced an empty answer by `model_output`, the last completion its loop decoded.
    previous_output = completion("Yes", think="She is not smiling.")
    empty = completion("", think="I cannot tell.")
    judge_row = row("judge", "No")
    ours = scoring.score_row(judge_row, empty)
    assert ours["prediction"] == "" and ours["reward"] == 0.0
    # What HumanOmniV2 scored: the whole previous completion holds "no" (in "not") → 1.
    assert scoring.score_humanomniv2("judge", previous_output, "No") == 1.0


def test_score_row_probe_verdict():
    probe_row = row(probe="bold", instruction="Highlight important observations using **bold**")
    assert scoring.score_row(probe_row, completion("B", "The **man** smiles."))["probe_ok"] is True
    assert scoring.score_row(probe_row, completion("B", "The man smiles."))["probe_ok"] is False


def test_score_row_errors_name_the_row():
    with pytest.raises(scoring.UnknownProblemType, match="'q7'.*'essay'"):
        scoring.score_row(row("essay"), completion("B"))
    no_truth = {"id": "q9", "problem_type": "multiple choice", "solution": "B"}
    with pytest.raises(ValueError, match="'q9'.*no ground truth"):
        scoring.score_row(no_truth, completion("B"))


def test_score_row_uses_the_given_keyword_lists():
    import ml_collections

    cfg = ml_collections.ConfigDict({
        "categories": {"crowd": {"weight": 1.0, "inflect": "noun", "words": ["crowd"]}},
        "irregular_forms": {}, "normaliser": 4.0, "missing_think": "zero",
    })
    result = scoring.score_row(row(), completion("B", "A crowd, crowds and a man."), people_focus_cfg=cfg)
    assert result["people_focus"] == {"score": 0.5, "crowd": 2}

