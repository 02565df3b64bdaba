import numpy as np
import pytest

from omni_jax.rewards import RewardFn, config, people_focus
from omni_jax.tokenizer import load_tokenizer

from .chat_server import chat

TOK = load_tokenizer("tiny")
RECORDS = [
    {"problem_type": "multiple choice", "solution": "<answer>B</answer>"},
    {"problem_type": "emer_ov_mc", "solution": "<think>x</think><answer>A,C</answer>", "answer": "A,C"},
    {"problem_type": "numerical", "answer": "12"},
    {"problem_type": "multiple choice", "solution": "<answer>A</answer>"},
]
COMPLETIONS = [
    "<context>a room</context><think>The woman smiles at the man.</think><answer>B</answer>",  # 1, 1, (2+0.5)/20
    "<context>c</context><think>background, scene</think><answer>A</answer>",  # 1, F1 2/3, 0
    "<think>person person person person</think><answer>12</answer>",  # format 0 (no context), 1, 4/20
    "The answer is A",  # 0, 0 (no <answer>), 0 (no think)
]
EXPECTED = {
    "format": [1, 1, 0, 0],
    "accuracy": [1, 2 / 3, 1, 0],
    "people_focus": [2.5 / 20, 0, 4 / 20, 0],
}


def batch(texts, T=48):
    ids = np.zeros((len(texts), T), np.int32)
    mask = np.zeros((len(texts), T), bool)
    for i, t in enumerate(texts):
        e = TOK.encode(t)[:T]
        ids[i, : len(e)], mask[i, : len(e)] = e, True
    return ids, mask


def test_components_total_and_stats_by_hand():
    fn = RewardFn(TOK, config.reward_defaults())
    total, components, stats = fn(COMPLETIONS, *batch(COMPLETIONS), RECORDS)
    for name, values in EXPECTED.items():
        np.testing.assert_allclose(components[name], values, atol=1e-6, err_msg=name)
        assert components[name].dtype == np.float32
    np.testing.assert_allclose(total, np.sum([EXPECTED[n] for n in EXPECTED], axis=0), atol=1e-6)
    assert total.dtype == np.float32
    # Counters only, each "<group>/<name>": the component means are the trainer's reward/<component>/mean.
    assert stats == {"accuracy/no_answer": 1, "people_focus/no_think_block": 1}


def test_text_path_equals_device_path_and_weights_apply():
    cfg = config.reward_defaults()
    cfg.weights.people_focus = 2.0
    cfg.weights.format = 0.0
    cfg.format.require_context = False
    fn = RewardFn(TOK, cfg)
    total_ids, comps_ids, _ = fn(COMPLETIONS, *batch(COMPLETIONS), RECORDS)
    total_text, comps_text, _ = fn(COMPLETIONS, None, None, RECORDS)
    np.testing.assert_allclose(comps_ids["people_focus"], comps_text["people_focus"], atol=1e-6)
    np.testing.assert_allclose(comps_text["format"], [1, 1, 1, 0])
    expected = np.array(EXPECTED["accuracy"]) + 2 * np.array(EXPECTED["people_focus"])
    np.testing.assert_allclose(total_text, expected, atol=1e-6)
    np.testing.assert_allclose(total_ids, expected, atol=1e-6)


def test_device_people_focus_reads_ids_not_text():
    """The ids decide people_focus (what was sampled), the strings only format and accuracy."""
    fn = RewardFn(TOK, config.reward_defaults())
    ids_of = ["<think>man man man man</think>"] * 4
    _, components, _ = fn(COMPLETIONS, *batch(ids_of), RECORDS)
    np.testing.assert_allclose(components["people_focus"], [4 / 20] * 4, atol=1e-6)
    assert people_focus.score_text(COMPLETIONS[3]) == 0.0


def test_unknown_weight_and_row_mismatch_are_errors():
    cfg = config.reward_defaults()
    cfg.weights.style = 1.0
    with pytest.raises(ValueError, match="unknown components"):
        RewardFn(TOK, cfg)
    fn = RewardFn(TOK, config.reward_defaults())
    with pytest.raises(ValueError, match="3 rows for 4 completions"):
        fn(COMPLETIONS, *batch(COMPLETIONS[:3]), RECORDS)


def test_judge_replaces_people_focus_and_keeps_the_keyword_score(serve):
    server = serve(lambda prompt, n: (200, chat("8"), 0))
    cfg = config.reward_defaults()
    cfg.judge.enabled, cfg.judge.endpoint = True, server.url
    total, components, stats = RewardFn(TOK, cfg)(COMPLETIONS, None, None, RECORDS)
    # completions 0-2 have a think block and get 0.8; the last keeps its keyword score 0
    np.testing.assert_allclose(components["people_focus"], [0.8, 0.8, 0.8, 0.0], atol=1e-6)
    np.testing.assert_allclose(components["people_focus_keywords"], EXPECTED["people_focus"], atol=1e-6)
    np.testing.assert_allclose(total, np.add(EXPECTED["format"], EXPECTED["accuracy"]) + [0.8, 0.8, 0.8, 0], atol=1e-6)
    assert stats["judge/rated"] == 3 and len(server.calls) == 3
