"""python -m omni_jax.infer on a tiny checkpoint and a real mp4; HumanOmniV2's evaluation prompt."""

import json

import pytest

from omni_jax import infer
from omni_jax.data import prompt
from omni_jax.eval import checkpoints, inference
from tests.data.media import make_video

OPTIONS = ["A. one", "B. two", "C. three", "D. four"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("infer") / "clip.mp4", seconds=2.0, size=(112, 112), fps=8)


def test_infer_cli_prints_one_json_object_with_blocks_rewards_and_speed(tiny_store, clip, capsys):
    argv = ["--ckpt", f"{tiny_store}@1", "--video", str(clip), "--question", "How many people are there?",
            "--options", *OPTIONS, "--solution", "B", "--max_new_tokens", "8", "--json"]
    assert infer.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["checkpoint"] == "tiny_run0-step1" or result["checkpoint"].endswith("-step1")
    assert 1 <= result["completion_tokens"] <= 8 and result["prompt_tokens"] > 50
    assert result["tokens_per_s"] > 0
    assert set(result["rewards"]) == {"format", "accuracy", "people_focus", "total"}
    # A random model writes no <answer>: accuracy 0, and the parsed blocks say so.
    assert result["answer"] is None and result["rewards"]["accuracy"] == 0.0


def test_infer_text_output_and_messages_file(tiny_store, clip, tmp_path, capsys):
    messages = [{"role": "user", "content": [{"type": "video", "video": clip.name},
                                             {"type": "text", "text": "What happens?"}]}]
    (tmp_path / "m.json").write_text(json.dumps(messages))
    clip_copy = tmp_path / clip.name
    clip_copy.write_bytes(clip.read_bytes())  # media paths are relative to the messages file
    assert infer.main(["--ckpt", str(tiny_store), "--messages", str(tmp_path / "m.json"),
                       "--max_new_tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "completion:" in out and "<think>:" in out and "tokens/s" in out


def test_infer_refuses_a_question_without_media(tiny_store):
    with pytest.raises(SystemExit):
        infer.main(["--ckpt", str(tiny_store), "--question", "Why?"])


def test_eval_prompt_is_humanomniv2s(tiny_store, clip, tmp_path):
    """The user turn of HumanOmniV2's eval script, written out by hand from eval_humanomniv2.py."""
    cfg = checkpoints.data_config_for(None)  # an HF checkpoint: the recipe's settings
    messages = inference.question_messages(cfg, "Why does she smile?", video=str(clip), options=["A. joy", "B. fear"])
    assert messages[0]["content"][0]["text"].startswith("You are a helpful assistant. Your primary goal is to deeply")
    assert messages[0]["content"][0]["text"].endswith("then give your final answer between the <answer> </answer> "
                                                      "tags.\n")
    kinds = [item["type"] for item in messages[1]["content"]]
    assert kinds == ["video", "audio", "text"]
    assert messages[1]["content"][2]["text"] == (
        "Here is a video, with the audio from the video.\nWhy does she smile? Options:\nA. joy\nB. fear\n"
        " Please provide only the single option letter (e.g., A, B, C, D, etc.) within the <answer> </answer> tags.")
    silent = make_video(tmp_path / "silent.mp4", seconds=1.0, size=(64, 64), fps=8, audio=False)
    messages = inference.question_messages(cfg, "How many?", video=str(silent), problem_type="numerical")
    assert [item["type"] for item in messages[1]["content"]] == ["video", "text"]
    assert messages[1]["content"][1]["text"] == (
        "How many? Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.")
    assert prompt.render_chat(messages).endswith("<|im_start|>assistant\n")


def test_a_training_checkpoint_is_asked_with_its_own_prompt_settings(tiny_store):
    loaded = checkpoints.open_checkpoint(str(tiny_store), progress=False)
    assert loaded.step == 1 and loaded.name.endswith("-step1")
    assert loaded.data_cfg.system_prompt.startswith("You are a helpful assistant. Describe the video")
    assert loaded.data_cfg.max_frames == 4 and loaded.data_cfg.prompt_style == "eval"
    assert checkpoints.parse_spec("base=gs://b/run/checkpoints@40") == ("base", "gs://b/run/checkpoints", 40)


def test_infer_timestamps_flag(tiny_store, clip, tmp_path, capsys, monkeypatch):
    """--timestamps --clip DIR: the answer's <think> gets [Frame N: T.XXs] marks (the tiny model's
    own answer is noise, so the generated completion is replaced by a fixed one with events)."""
    from tests.clip.tiny_clip import save_tiny_clip_dir

    save_tiny_clip_dir(tmp_path / "clip")
    think = "<context>Two people.</context><think>The man smiles at the woman. She waves a hand.</think><answer>B</answer>"
    real_answer = inference.answer
    monkeypatch.setattr(inference, "answer", lambda *a, **k: {**real_answer(*a, **k), "completion": think})
    argv = ["--ckpt", str(tiny_store), "--video", str(clip), "--question", "Who waves?", "--max_new_tokens", "4",
            "--timestamps", "--clip", str(tmp_path / "clip"), "--json"]
    assert infer.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["timestamps"]["events"]) == 2 and result["completion"].count("[Frame ") == 2
    assert "[Frame" in result["think"] and result["answer"] == "B"
    with pytest.raises(SystemExit):
        infer.main(["--ckpt", str(tiny_store), "--video", str(clip), "--question", "Who?", "--timestamps"])
