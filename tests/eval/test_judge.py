"""The optional LLM judge in an evaluation: each answer's <think> rated 0-10 into the row's `judge`."""

from omni_jax.eval import runner
from omni_jax.rewards.config import judge_defaults
from omni_jax.rewards.judge import Judge
from tests.rewards.chat_server import FakeServer, chat


def test_judge_rates_each_think_and_leaves_rows_without_one_unrated():
    server = FakeServer(lambda prompt, n: (200, chat("7" if "smiles" in prompt else "2"), 0.0))
    try:
        cfg = judge_defaults()
        cfg.enabled, cfg.endpoint, cfg.max_retries = True, server.url, 0
        rows = [{"output": "<think>The woman smiles at him.</think><answer>A</answer>"},
                {"output": "<think>A red wall.</think><answer>B</answer>"},
                {"output": "<answer>C</answer>"}]
        runner.add_judge_ratings(Judge(cfg), rows)
    finally:
        server.close()
    assert [r["judge"] for r in rows] == [7.0, 2.0, None]
    assert len(server.calls) == 2  # no request for an answer without <think>
