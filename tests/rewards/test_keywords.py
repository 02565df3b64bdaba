import ml_collections
import pytest

from omni_jax.rewards import config, keywords as kw


@pytest.mark.parametrize(
    "word, kind, irregular, expected",
    [
        ("smile", "verb", (), ["smile", "smiles", "smiling", "smiled"]),
        ("nod", "verb", (), ["nod", "nods", "nodding", "nodded"]),
        ("cry", "verb", (), ["cry", "cries", "crying", "cried"]),
        ("talk", "verb", (), ["talk", "talks", "talking", "talked"]),
        ("listen", "verb", (), ["listen", "listens", "listening", "listened"]),
        ("sit", "verb", ("sat",), ["sit", "sits", "sitting", "sat"]),
        ("speak", "verb", ("spoke", "spoken"), ["speak", "speaks", "speaking", "spoke", "spoken"]),
        ("lie", "verb", (), ["lie", "lies", "lying", "lied"]),
        ("face", "noun", (), ["face", "faces"]),
        ("body", "noun", (), ["body", "bodies"]),
        ("man", "noun", ("men",), ["man", "men"]),
        ("gaze", "none", (), ["gaze"]),
    ],
)
def test_inflect_follows_english_spelling(word, kind, irregular, expected):
    assert kw.inflect(word, kind, irregular) == expected


def test_default_spec_has_the_plans_words_and_forms():
    spec = kw.resolve(None)
    people, action, environment = (spec.categories.index(n) for n in ("people", "action", "environment"))
    assert spec.weights[people] == 1.0 and spec.weights[action] == 0.5 and spec.weights[environment] == -0.3
    for w in ["person", "people", "man", "men", "woman", "women", "facial", "face", "expression",
              "gesture", "body", "posture", "eye", "interaction", "character", "individual"]:
        assert spec.keywords[(w,)] == people, w
    for w in ["talk", "speak", "walk", "smiles", "smiling", "smiled", "laugh", "cry", "nod", "wave",
              "point", "look", "turn", "sit", "stand", "sat", "stood"]:
        assert spec.keywords[(w,)] == action, w
    for w in ["background", "scene", "setting", "lighting", "location", "weather", "time"]:
        assert spec.keywords[(w,)] == environment, w
    assert spec.keywords[("color", "scheme")] == environment
    assert spec.keywords[("body", "language")] == people
    for pronoun in ["he", "she", "they", "his", "her"]:
        assert (pronoun,) not in spec.keywords
    assert ("sitted",) not in spec.keywords and ("mans",) not in spec.keywords
    assert spec.normaliser == 20.0 and spec.missing_think == "zero"


def _cfg(**categories):
    c = config.people_focus_defaults()
    c.categories = ml_collections.ConfigDict(categories)
    return c


def test_a_form_in_two_categories_is_a_clear_error():
    cfg = _cfg(a=dict(weight=1.0, inflect="verb", words=["point"]),
               b=dict(weight=1.0, inflect="noun", words=["points"]))
    with pytest.raises(ValueError, match="'points'.*both categories 'a' and 'b'"):
        kw.resolve(cfg)


@pytest.mark.parametrize("bad", ["re-enact", "3d", "café", ""])
def test_keywords_must_be_ascii_letters(bad):
    with pytest.raises(ValueError, match="must be ASCII letters"):
        kw.resolve(_cfg(a=dict(weight=1.0, inflect="none", words=[bad])))


def test_bad_policy_and_normaliser_are_errors():
    cfg = config.people_focus_defaults()
    cfg.missing_think = "ignore"
    with pytest.raises(ValueError, match="missing_think"):
        kw.resolve(cfg)
    cfg = config.people_focus_defaults()
    cfg.normaliser = 0.0
    with pytest.raises(ValueError, match="normaliser"):
        kw.resolve(cfg)


def test_words_split_on_every_non_letter_byte():
    words = kw.words_with_joins("The man's 3rd-person view; naïve\u2019s FACE2face".encode())
    assert [w for w, _ in words] == ["the", "man", "s", "rd", "person", "view", "na", "ve", "s", "face", "face"]
    # joined: only whitespace / hyphens since the previous word
    assert [j for _, j in words] == [False, True, False, False, True, True, False, False, False, True, False]
