import numpy as np
import pytest

from omni_jax.rewards.format import format_reward, format_rewards

GOOD = "<context>a room</context><think>the man smiles</think><answer>A</answer>"


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD, 1.0),
        ("<context>a\nroom</context>\n<think>x\ny</think>  \n<answer>\nA\n</answer>", 1.0),
        (GOOD + " trailing words", 1.0),  # anchored at the start only, as HumanOmniV2
        (" " + GOOD, 0.0),  # nothing may come before <context>
        ("<think>x</think><answer>A</answer>", 0.0),  # context required by default
        ("<context>a</context><answer>A</answer><think>x</think>", 0.0),  # order
        ("<context>a</context> then <think>x</think><answer>A</answer>", 0.0),  # only whitespace between
        ("<context>a</context><think>x</think><answer>A", 0.0),  # unclosed
        ("<context>a</context><think>x<answer>A</answer>", 0.0),
        ("", 0.0),
    ],
)
def test_humanomniv2_format_rule(text, expected):
    assert format_reward(text) == expected


def test_context_can_be_optional():
    assert format_reward("<think>x</think><answer>A</answer>", require_context=False) == 1.0
    assert format_reward(GOOD, require_context=False) == 1.0
    assert format_reward("<answer>A</answer>", require_context=False) == 0.0
    assert format_reward("<context>a</context><answer>A</answer>", require_context=False) == 0.0


def test_batch_is_float32():
    out = format_rewards([GOOD, "x"])
    assert out.dtype == np.float32 and out.tolist() == [1.0, 0.0]
