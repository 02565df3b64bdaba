"""Hand-checked people_focus reference cases (default lists: people +1, action +0.5, env −0.3, /20)."""

import ml_collections
import pytest

from omni_jax.rewards import config, people_focus as pf


def think(body: str) -> str:
    return f"<context>a video</context><think>{body}</think><answer>A</answer>"


def counts(text, cfg=None):
    spec = pf.kw.resolve(cfg)
    got = pf.count_text(text, spec)
    return None if got is None else dict(zip(spec.categories, got))


def test_formula_on_a_hand_counted_example():
    # people: woman, man, faces, body language (not also body) = 4; action: smiles, nodded = 2;
    # environment: background, color scheme = 2  →  raw = 4 + 1 − 0.6 = 4.4 → 0.22
    text = think("The woman smiles; the man nodded. Faces, body language, background and color scheme.")
    assert counts(text) == {"action": 2, "environment": 2, "people": 4}
    assert pf.score_text(text) == pytest.approx(4.4 / 20)


def test_the_forks_bugs_are_not_repeated():
    # "he" in "the", "man" in "woman": whole words only; repeats count every time.
    assert counts(think("the theme of the other")) == {"action": 0, "environment": 0, "people": 0}
    assert counts(think("woman woman woman")) == {"action": 0, "environment": 0, "people": 3}
    assert counts(think("manner, human, womanly, eyeball, timeless")) == {"action": 0, "environment": 0, "people": 0}
    assert counts(think("smile smile smiled")) == {"action": 3, "environment": 0, "people": 0}


def test_case_and_punctuation():
    assert counts(think("MAN. Man, mAn! (man) man's man-made man1")) == {"action": 0, "environment": 0, "people": 7}


def test_phrases_join_by_whitespace_or_hyphen_only():
    env = lambda body: counts(think(body))["environment"]
    assert env("color scheme") == 1
    assert env("Color-Scheme") == 1
    assert env("color \n - scheme") == 1
    assert env("color. scheme") == 0
    assert env("color, scheme") == 0
    assert env("colour scheme") == 0
    assert env("color schemes") == 1


def test_only_the_think_block_counts():
    text = "<context>man woman people</context><think>a person</think><answer>men</answer>"
    assert counts(text)["people"] == 1
    # first <think>, then the first </think> after it
    assert counts("<think>man</think> man <think>man</think>")["people"] == 1
    # the tag word "think" is never part of the block
    cfg = config.people_focus_defaults()
    cfg.categories.people.words = ["think"]
    assert counts("<think>I think</think>", cfg)["people"] == 1


@pytest.mark.parametrize(
    "text, people",
    [("no tags, man", 1), ("<think>man woman", 2), ("man</think>", 1), ("</think>man<think>", 1), ("", 0)],
)
def test_missing_think_block_policy(text, people):
    assert pf.score_text(text) == 0.0
    cfg = config.people_focus_defaults()
    cfg.missing_think = "whole_text"
    assert pf.score_text(text, cfg) == pytest.approx(people / 20)


def test_score_is_clipped():
    assert pf.score_text(think("person " * 30)) == 1.0
    assert pf.score_text(think("background " * 5)) == 0.0
    assert pf.score_text(think("person " * 10 + "time " * 10)) == pytest.approx((10 - 3) / 20)


def test_non_ascii_separates_words():
    assert counts(think("男人man女人 café naïve smile\u2019s"))  == {"action": 1, "environment": 0, "people": 1}


def test_custom_lists_weights_and_normaliser():
    cfg = config.people_focus_defaults()
    cfg.categories = ml_collections.ConfigDict(dict(
        good=dict(weight=2.0, inflect="none", words=["cat", "big cat"]),
        bad=dict(weight=-1.0, inflect="noun", words=["dog"])))
    cfg.normaliser = 10.0
    text = think("cat big cat dogs dog cats")
    assert counts(text, cfg) == {"bad": 2, "good": 2}
    assert pf.score_text(text, cfg) == pytest.approx((2 * 2 - 2) / 10)


def test_longer_phrase_suppresses_only_what_it_covers():
    cfg = config.people_focus_defaults()
    cfg.categories = ml_collections.ConfigDict(dict(
        x=dict(weight=1.0, inflect="none", words=["a", "a b", "b c", "a b c d"])))
    # a b c d: one occurrence of "a b c d" covers a, "a b", "b c"
    assert counts(think("a b c d"), cfg) == {"x": 1}
    # a b c: "a b" and "b c" overlap without containing each other: both count; "a" is covered
    assert counts(think("a b c"), cfg) == {"x": 2}
    assert counts(think("a b, c a"), cfg) == {"x": 2}
