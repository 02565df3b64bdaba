import pytest

from omni_jax.eval import probe, text


def out(think, answer="B", context="A kitchen."):
    return f"<context>{context}</context><think>{think}</think><answer>{answer}</answer>"


PEOPLE_RICH = ("The man and the woman face each other. The woman's facial expression is tense; the man's "
               "posture is stiff and his gaze drops. Her gesture points at the person by the door. Their body "
               "language and eye contact show the interaction. The man frowns, the woman sighs and turns.")
PLAIN = "The kitchen is bright. A table stands in the room near the wall."

CASES = {
    # name: (a completion that follows it, one that does not)
    "people_focus": (out(PEOPLE_RICH), out("A man is in the kitchen. The room is bright and the wall is white.")),
    "timestamps": (out("The man smiles [Frame 3: 3.00s] and leaves [Frame 12: 12.50s]."),
                   out("The man smiles [Frame 3: 3s] and leaves at frame 12 (12.5s).")),
    "numbered_steps": (out("Step 1: look at the man. Step 2: listen to him. Step 3: decide."),
                       out("Step 2: listen to him. Step 1: look at the man.")),
    "bold": (out("The man is **visibly upset** when she leaves."), out("The man is *upset* when she leaves.")),
    "chinese": (out("男人看着女人，他很生气。所以答案是 B。", context="厨房里有两个人。"),
                out("The man looks at the woman; he is angry. 所以答案是 B。")),
    "short_think": (out("The man frowns, so he is upset."), out(" ".join(["word"] * 100))),
}


@pytest.mark.parametrize("name", [i.name for i in probe.INSTRUCTIONS])
def test_each_checker_passes_and_fails(name):
    follows, ignores = CASES[name]
    assert probe.check(name, follows) is True
    assert probe.check(name, ignores) is False


def test_six_instructions_of_the_plan():
    assert [i.name for i in probe.INSTRUCTIONS] == [
        "people_focus", "timestamps", "numbered_steps", "bold", "chinese", "short_think"]
    texts = [i.text for i in probe.INSTRUCTIONS]
    assert "Include timestamp for key observations using format [Frame N: T.XXs]" in texts
    assert "Keep <think> under 100 words" in texts


def test_plain_completion_follows_none():
    plain = out(PLAIN)
    assert [i.name for i in probe.INSTRUCTIONS if i.check(plain)] == ["short_think"]


@pytest.mark.parametrize("think, expected", [
    ("Step 1: a. Step 2: b.", True),
    ("step 1 then step 2", True),  # any case
    ("Step 1: a. Step 1 again. Step 2: b.", True),  # a repeated number is fine
    ("Step 1: only one step.", False),
    ("Step 1: a. Step 3: c.", False),  # a gap
    ("Step 0: a. Step 1: b.", False),
    ("Steps 1 and 2", False),
])
def test_numbered_steps_rule(think, expected):
    assert probe.follows_numbered_steps(out(think)) is expected


@pytest.mark.parametrize("completion, expected", [
    ("[Frame 0: 0.00s]", True),
    ("[Frame 15: 15.00s]", True),
    ("[frame 3: 3.00s]", False),  # the format asks for "Frame"
    ("[Frame 3: 3.0s]", False),  # two decimals
    ("[Frame N: T.XXs]", False),  # the placeholder echoed back
])
def test_timestamp_rule(completion, expected):
    assert probe.follows_timestamps(completion) is expected


def test_short_think_boundary_and_missing_block():
    assert probe.follows_short_think(out(" ".join(["w"] * 99))) is True
    assert probe.follows_short_think(out(" ".join(["w"] * 100))) is False
    assert probe.follows_short_think("<answer>B</answer>") is False  # no <think> at all
    assert probe.follows_short_think(out("字" * 99)) is True  # one CJK character is one word
    assert probe.follows_short_think(out("字" * 100)) is False


def test_bold_needs_text_inside():
    assert probe.follows_bold(out("a **** b")) is False
    assert probe.follows_bold(out("a ** ** b")) is False
    assert probe.follows_bold(out("**open\nclose**")) is False


def test_text_measures():
    assert text.word_count("The man, **smiling** - waves. 他在笑。") == 7  # 4 English + 他在笑
    assert text.cjk_share("<think>abcd</think>中文中文") == 0.5  # tags are not letters
    assert text.cjk_share("123 !") is None
    assert text.think_text("x<think> a </think> b </think>") == "a"
    assert text.think_text("<think> unclosed") is None


def test_unknown_instruction():
    with pytest.raises(ValueError, match="unknown probe instruction 'rhyme'"):
        probe.check("rhyme", "x")


def test_probe_rows_sampling():
    rows = [{"id": f"ib:{i}", "problem": f"q{i}"} for i in range(10)]
    picked = probe.probe_rows(rows, per_instruction=3, seed=1)
    assert len(picked) == 3 * 6
    originals = [r["probe_of"] for r in picked if r["probe"] == "bold"]
    assert len(set(originals)) == 3
    # the same questions for every instruction, in the rows' order
    for instruction in probe.INSTRUCTIONS:
        group = [r for r in picked if r["probe"] == instruction.name]
        assert [r["probe_of"] for r in group] == originals
        assert all(r["instruction"] == instruction.text for r in group)
        assert all(r["id"] == f"{r['probe_of']}#probe:{instruction.name}" for r in group)
    assert originals == sorted(originals, key=lambda i: int(i.split(":")[1]))
    assert all(r["problem"] == f"q{r['probe_of'].split(':')[1]}" for r in picked)
    assert "probe" not in rows[0]  # copies
    assert probe.probe_rows(rows, 3, seed=1) == picked  # seeded
    other_seeds = {tuple(r["probe_of"] for r in probe.probe_rows(rows, 3, seed=s)[:3]) for s in range(2, 12)}
    assert len(other_seeds) > 1
    assert len(probe.probe_rows(rows[:2], per_instruction=5, seed=0)) == 2 * 6
    with pytest.raises(ValueError, match="row 1 has no 'id'"):
        probe.probe_rows([{"id": "a"}, {"problem": "b"}], 1, seed=0)
