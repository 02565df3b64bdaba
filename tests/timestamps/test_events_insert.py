"""Event extraction and mark insertion on text (no model)."""

from __future__ import annotations

import re

import pytest

from omni_jax.rewards.format import format_reward
from omni_jax.timestamps.events import Event, NoThinkBlock, prompt_events, rule_events
from omni_jax.timestamps.insert import fuzzy_find, insert_marks

COMPLETION = ("<context>A man and a woman in a garden.</context>"
              "<think>Now, the woman picks up a red rose, then she smiles at the man. The garden is green; "
              "I notice that the man takes the rose from her hand. So the answer is B.</think>"
              "<answer>B</answer>")


def test_rule_events_are_people_clauses_in_order():
    events = rule_events(COMPLETION)
    assert [e.query for e in events] == ["the woman picks up a red rose", "she smiles at the man",
                                         "the man takes the rose from her hand"]
    for e in events:
        assert COMPLETION[e.start:e.end] == e.anchor
    assert events[0].anchor == "the woman picks up a red rose" and events[2].anchor.startswith("I notice")


def test_clauses_without_people_or_action_words_are_not_events():
    assert rule_events("<think>The garden is green. The sky is blue and so on.</think>") == []
    # Short action clauses count; clauses about the question do not.
    text = "<think>He nods. The question asks how the man feels; option C says the woman is sad.</think>"
    assert [e.query for e in rule_events(text)] == ["He nods"]


def test_no_think_block():
    with pytest.raises(NoThinkBlock):
        rule_events("<answer>B</answer>")
    with pytest.raises(NoThinkBlock):
        rule_events("<think>unterminated")


def test_insertion_keeps_structure_and_is_idempotent():
    events = rule_events(COMPLETION)
    out, how = insert_marks(COMPLETION, events, [1, 3, 6], [0.5, 1.5, 3.0])
    assert how == ["exact"] * 3
    assert "picks up a red rose [Frame 1: 0.50s], then she smiles at the man [Frame 3: 1.50s]." in out
    assert "from her hand [Frame 6: 3.00s]. So the answer" in out
    assert format_reward(out) == 1.0
    assert re.sub(r" \[Frame \d+: [\d.]+s\]", "", out) == COMPLETION
    again, how2 = insert_marks(out, rule_events(out), [1, 3, 6], [0.5, 1.5, 3.0])
    assert again == out and how2 == ["present"] * 3
    # Re-extraction of the marked text sees the same events (marks are not part of queries).
    assert [e.query for e in rule_events(out)] == [e.query for e in events]


def test_fuzzy_then_fallback():
    events = [Event(anchor="the woman pick up the red roses", query="woman picking up a rose"),
              Event(anchor="a dog barks loudly somewhere", query="a dog barking")]
    out, how = insert_marks(COMPLETION, events, [2, 4], [1.0, 2.0])
    assert how == ["fuzzy", "fallback"]
    assert "picks up a red rose [Frame 2: 1.00s]," in out
    assert "answer is B.\n- a dog barking [Frame 4: 2.00s]\n</think><answer>B</answer>" in out
    assert format_reward(out) == 1.0
    again, how2 = insert_marks(out, events, [2, 4], [1.0, 2.0])
    assert again == out and how2 == ["present", "present"]


def test_fuzzy_find_refuses_unrelated_text():
    assert fuzzy_find("the woman smiles", "completely different words here", 0.8)[:2] == (-1, -1)


def test_prompt_extractor_parses_json_lines_and_locates_anchors():
    seen = []

    def generate(prompt):
        seen.append(prompt)
        return ('Here you go:\n{"anchor": "THE WOMAN picks up a red rose", "query": "woman holding a rose"}\n'
                'not json\n{"anchor": "she hands it over", "query": "handing a rose"}\n[1, 2]')

    events = prompt_events(COMPLETION, generate)
    assert "the woman picks up a red rose" in seen[0] and "<think>" not in seen[0]
    assert [e.query for e in events] == ["woman holding a rose", "handing a rose"]
    assert COMPLETION[events[0].start:events[0].end] == "the woman picks up a red rose"
    assert events[1].start == -1


def test_prompt_extractor_over_a_chat_endpoint():
    from omni_jax.rewards.config import judge_defaults
    from omni_jax.timestamps.events import endpoint_generate
    from tests.rewards.chat_server import FakeServer, chat

    server = FakeServer(lambda prompt, n: (200, chat('{"anchor": "she smiles at the man", "query": "a smile"}'), 0))
    try:
        cfg = judge_defaults()
        cfg.endpoint, cfg.api_key_env = server.url, ""
        events = prompt_events(COMPLETION, endpoint_generate(cfg))
    finally:
        server.close()
    assert [(e.anchor, e.query) for e in events] == [("she smiles at the man", "a smile")]
    assert "she smiles at the man" in server.calls[0][0]["messages"][0]["content"]


def test_a_humanomniv2_style_think():
    text = ("<context>A man and a woman sit at a table.</context><think>Okay, I'm looking at this scene. The first "
            "thing I notice is the red rose on the table. Now, let me focus on the man. He's in a black suit and bow "
            "tie, and he looks nervous. The woman smiles at him and then looks away. Her facial expression changes "
            "when he speaks; she frowns slightly. The lighting is dim. Then he hands her the rose, and she laughs. "
            "Based on her body language, she seems amused. The question asks how the woman feels, so option B "
            "fits best.</think><answer>B</answer>")
    assert [e.query for e in rule_events(text)] == [
        "he looks nervous", "The woman smiles at him and then looks away",
        "Her facial expression changes when he speaks", "she frowns slightly", "she laughs"]


def test_prompt_extractor_keeps_chinese_anchors_with_english_queries():
    text = "<think>女人拿起玫瑰，微笑着看向男人。男人接过玫瑰。</think><answer>B</answer>"
    reply = ('{"anchor": "女人拿起玫瑰", "query": "a woman picks up a rose"}\n'
             '{"anchor": "男人接过玫瑰", "query": "a man takes a rose"}')
    events = prompt_events(text, lambda prompt: reply if "English" in prompt else "")
    assert [text[e.start:e.end] for e in events] == ["女人拿起玫瑰", "男人接过玫瑰"]
    from omni_jax.timestamps.insert import insert_marks

    out, how = insert_marks(text, events, [2, 7], [1.0, 3.5])
    assert out == "<think>女人拿起玫瑰 [Frame 2: 1.00s]，微笑着看向男人。男人接过玫瑰 [Frame 7: 3.50s]。</think><answer>B</answer>"
    assert rule_events(text) == []  # the keyword lists are English
