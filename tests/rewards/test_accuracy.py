import pytest

from omni_jax.rewards import accuracy as acc


def rec(problem_type, answer):
    return {"problem_type": problem_type, "solution": f"<think>because</think><answer>{answer}</answer>"}


def answer(text):
    return f"<context>c</context><think>t</think><answer>{text}</answer>"


@pytest.mark.parametrize(
    "problem_type, truth, output, expected",
    [
        ("multiple choice", "A", "A", 1.0),
        ("multiple choice", "A", " A \n", 1.0),
        ("multiple choice", "A", "B", 0.0),
        ("multiple choice", "A", "A.", 0.0),
        ("numerical", "3", "3", 1.0),
        ("numerical", "3", "3.0", 0.0),  # one has a decimal point, the other not
        ("numerical", "3.14", "3.141", 1.0),  # rounded to 2 decimals
        ("numerical", "3.14", "3.15", 0.0),
        ("numerical", "1,000.5", "1000.50", 1.0),
        ("numerical", "1000", "1,000", 0.0),
        ("emer_ov_mc", "A,B", "A,B", 1.0),
        ("emer_ov_mc", "A,B", "B, A", 1.0),  # labels stripped (HumanOmniV2 gave 0.5)
        ("emer_ov_mc", "A,B", "A", 2 / 3),
        ("emer_ov_mc", "A,B,C", "A,D", 0.4),
        ("emer_ov_mc", "A", "B", 0.0),
        ("free-form", "The red car.", "red car", 1.0),
        ("free-form", "a man, smiling", "Man smiling!", 1.0),
        ("free-form", "red car", "blue car", 0.0),
        ("OCR", "the cat sat", "the cat sat", 1.0),
        ("OCR", "the cat sat", "the dog sat", pytest.approx(2 / 3)),
        ("OCR", "a b", "x y z w", 0.0),  # clipped at 0
        ("regression", "10", "8", pytest.approx(0.8)),
        ("regression", "10", "30", 0.0),
        ("judge", "Yes, it is", "yes", 1.0),
        ("judge", "No.", "I know it is not", 0.0),  # "know"/"not" are not "no"
        ("judge", "no", "No, never", 1.0),
    ],
)
def test_rules(problem_type, truth, output, expected):
    rewards, reasons = acc.accuracy_rewards([answer(output)], [rec(problem_type, truth)])
    assert rewards[0] == pytest.approx(expected, abs=1e-6)
    assert not reasons


def test_missing_answer_and_bad_numbers_are_counted_zeros():
    records = [rec("multiple choice", "A"), rec("numerical", "3"), rec("regression", "2"), rec("multiple choice", "A")]
    outputs = ["<think>no answer block</think>", answer("three"), answer("x"), answer("A")]
    rewards, reasons = acc.accuracy_rewards(outputs, records)
    assert rewards.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert reasons == {"no_answer": 1, "unparsable_number": 2}


def test_ground_truth_from_answer_field_when_solution_has_no_tags():
    record = {"problem_type": "multiple choice", "solution": "B", "answer": "C"}
    assert acc.ground_truth(record) == "C"
    assert acc.accuracy_rewards([answer("C")], [record])[0][0] == 1.0


def test_empty_answers_do_not_match_by_accident():
    # HumanOmniV2 extracted "" from both and called them equal; a completion without <answer> is 0.
    rewards, _ = acc.accuracy_rewards(["nothing"], [{"problem_type": "multiple choice", "answer": ""}])
    assert rewards[0] == 0.0


def test_unknown_problem_type_is_a_clear_error():
    with pytest.raises(ValueError, match=r"record 1 has problem_type 'essay'.*supports"):
        acc.accuracy_rewards([answer("A")] * 2, [rec("multiple choice", "A"), rec("essay", "A")])


def test_record_without_ground_truth_is_a_clear_error():
    with pytest.raises(ValueError, match="record 0 .*no ground truth"):
        acc.accuracy_rewards([answer("A")], [{"problem_type": "multiple choice"}])
