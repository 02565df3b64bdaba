import pytest

from omni_jax.data import prompt
from omni_jax.tokenizer import load_tokenizer

# Qwen2.5-Omni's chat template (chat_template.json of the released checkpoints; the same string is
# in transformers' Qwen2.5-Omni processor tests). Rendered with jinja2 by transformers as the oracle.
QWEN_OMNI_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}{% set video_count = "
    "namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in "
    "message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>{% elif content['type'] == 'audio' or 'audio' in content or "
    "'audio_url' in content %}{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio "
    "{{ audio_count.value }}: {% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>{% elif content['type'] == 'video' or "
    "'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

MC = {"problem": "Why does the man laugh?", "problem_type": "multiple choice",
      "options": ["A. He is nervous.", "B. The joke is funny.", "C. He is sad.", "D. He is cold."],
      "video": "/data/v.mp4", "image": None, "audio": None}


def test_system_prompt_is_humanomniv2s():
    s = prompt.SYSTEM_PROMPT
    assert s.startswith("You are a helpful assistant. Your primary goal is to deeply analyze and interpret "
                        "information from available various modalities (image, video, audio, text context)")
    assert s.endswith("detail the reasoning between the <think> </think> tags, and then give your final answer "
                      "between the <answer> </answer> tags.\n")
    assert "related to the question. \n\nIn reasoning, It is encouraged" in s
    assert "<context>" not in prompt.SYSTEM_PROMPT_NO_CONTEXT
    assert prompt.SYSTEM_PROMPT_NO_CONTEXT.endswith("Detail the reasoning between the <think> </think> tags, and "
                                                    "then give your final answer between the <answer> </answer> tags.\n")


def test_question_layout_train_and_eval():
    msgs = prompt.build_messages(MC, has_audio=True)
    content = msgs[1]["content"]
    assert content[0] == {"type": "video", "video": "/data/v.mp4"}
    assert content[1] == {"type": "audio", "audio": "/data/v.mp4"}
    assert content[2]["text"] == (
        "Here is a video, with the audio from the video.\nWhy does the man laugh? Options:\nA. He is nervous.\n"
        "B. The joke is funny.\nC. He is sad.\nD. He is cold.\n\n Please provide only the single option letter "
        "(e.g., A, B, C, D, etc.) within the <answer> </answer> tags.")
    no_audio = prompt.build_messages(MC, has_audio=False)[1]["content"]
    assert len(no_audio) == 2 and no_audio[1]["text"].startswith(
        "Here is the video, and there is no audio information, you don't need to process the audio.\nWhy")
    ev = prompt.build_messages(MC, has_audio=False, prompt_style="eval")[1]["content"][1]["text"]
    assert ev.startswith("Why does") and "D. He is cold.\n Please provide" in ev
    # numerical: no options block
    num = dict(MC, problem="How many people?", problem_type="numerical", options=[])
    assert prompt.build_messages(num, has_audio=True)[1]["content"][2]["text"].endswith(
        "How many people?\n Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.")
    # interleaved: no separate audio item
    inter = prompt.build_messages(MC, has_audio=True, use_audio_in_video=True)[1]["content"]
    assert [c["type"] for c in inter] == ["video", "text"]
    with pytest.raises(ValueError):
        prompt.build_messages(MC, has_audio=True, prompt_style="other")
    assert prompt.build_messages(MC, has_audio=True)[0]["content"][0]["text"] == prompt.SYSTEM_PROMPT
    short = prompt.build_messages(MC, has_audio=True, require_context=False, system_prompt="Be brief.")
    assert short[0]["content"][0]["text"] == "Be brief."


@pytest.mark.parametrize("case", ["video_audio", "image", "no_system", "string_content"])
def test_render_chat_equals_jinja_template(case):
    tok = load_tokenizer("tiny")
    if case == "video_audio":
        messages = prompt.build_messages(MC, has_audio=True)
    elif case == "image":
        messages = prompt.build_messages(dict(MC, image="/x.png", video=None), has_audio=False)
    elif case == "no_system":
        messages = [{"role": "user", "content": [{"type": "video", "video": "v"}, {"type": "text", "text": "Hi"}]}]
    else:
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Bye"}]
    want = tok.apply_chat_template(messages, chat_template=QWEN_OMNI_TEMPLATE, tokenize=False,
                                   add_generation_prompt=True)
    assert prompt.render_chat(messages) == want
