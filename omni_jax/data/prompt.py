"""HumanOmniV2's prompt: system prompt, question layout per problem_type, Qwen2.5-Omni chat template.

The strings below are data copied from HumanOmniV2 (`src/open-r1-multimodal/src/open_r1/
grpo_qwenomni.py` for training, `eval/eval_humanomniv2.py` for evaluation); the two scripts lay
the question out slightly differently, and `prompt_style` picks which ("train" | "eval").
"""

from __future__ import annotations

SYSTEM_PROMPT = (
    "You are a helpful assistant. Your primary goal is to deeply analyze and interpret information from "
    "available various modalities (image, video, audio, text context) to answer questions with human-like "
    "depth and a clear, traceable thought process.\n\n"
    "Begin by thoroughly understanding the image, video, audio or other available context information, and "
    "then proceed with an in-depth analysis related to the question. \n\n"
    "In reasoning, It is encouraged to incorporate self-reflection and verification into your reasoning "
    "process. You are encouraged to review the image, video, audio, or other context information to ensure "
    "the answer accuracy.\n\n"
    "Provide your understanding of the image, video, and audio between the <context> </context> tags, detail "
    "the reasoning between the <think> </think> tags, and then give your final answer between the <answer> "
    "</answer> tags.\n"
)

# require_context=False: the same prompt whose last paragraph drops the <context> block (ours).
SYSTEM_PROMPT_NO_CONTEXT = SYSTEM_PROMPT.replace(
    "Provide your understanding of the image, video, and audio between the <context> </context> tags, detail "
    "the reasoning",
    "Detail the reasoning",
)

TYPE_TEMPLATE = {
    "multiple choice": " Please provide only the single option letter (e.g., A, B, C, D, etc.) within the "
    "<answer> </answer> tags.",
    "numerical": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "OCR": " Please transcribe text from the image/video clearly and provide your text answer within the "
    "<answer> </answer> tags.",
    "free-form": " Please provide your text answer within the <answer> </answer> tags.",
    "regression": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "emer_ov": " Please provide the words to describe emotions within the  <answer> </answer> tags.",
    "emer_ov_mc": " Please provide only the single or multiple option letter (e.g., A for single option or A,E "
    "for multi option, etc.) within the <answer> </answer> tags.",
    "judge": " Please answer Yes or No within the <answer> </answer> tags.",
}

DEFAULT_SYSTEM = "You are a helpful assistant."  # what the chat template adds when none is given


def question_text(problem: str, problem_type: str, options: list[str]) -> str:
    """The question with its options listed (multiple choice / emer_ov_mc), HumanOmniV2's layout."""
    if problem_type in ("multiple choice", "emer_ov_mc"):
        return problem + " Options:\n" + "".join(op + "\n" for op in options)
    return problem


def build_messages(record: dict, *, has_audio: bool, with_audio: bool = True, use_audio_in_video: bool = False,
                   require_context: bool = True, prompt_style: str = "train", system_prompt: str = "") -> list[dict]:
    """Chat messages for one record (schema in omni_jax.data.sources), media as content items.

    has_audio: the record's media has an audio track (or a separate audio file). with_audio: give
    it to the model (HumanOmniV2's run does). use_audio_in_video: the track rides inside the video
    item (interleaved) instead of a separate audio item. The media values are passed through
    unchanged (paths, bytes or arrays). system_prompt: "" for HumanOmniV2's, else this text.
    """
    if prompt_style not in ("train", "eval"):
        raise ValueError(f"prompt_style must be 'train' or 'eval', got {prompt_style!r}")
    question = question_text(record["problem"], record["problem_type"], record.get("options") or [])
    sep = "\n" if prompt_style == "train" else ""
    text_prompt = question + sep + TYPE_TEMPLATE[record["problem_type"]]
    kind = "image" if record.get("image") is not None else "video"
    media_item = {"type": kind, kind: record[kind]}
    if kind == "video" and record.get("video_fps") is not None:
        media_item["video_fps"] = record["video_fps"]
    content = [media_item]
    audio = (with_audio or use_audio_in_video) and has_audio
    if audio and kind == "image":
        content.append({"type": "audio", "audio": record["audio"]})
        text = "Here is the image, with the coresponding audio.\n" + text_prompt
    elif audio:
        if not use_audio_in_video:
            src = record["audio"] if record.get("audio") is not None else record["video"]
            content.append({"type": "audio", "audio": src})
        text = f"Here is a {kind}, with the audio from the video.\n" + text_prompt
    elif with_audio and prompt_style == "train":
        text = f"Here is the {kind}, and there is no audio information, you don't need to process the audio.\n"
        text += text_prompt
    else:
        text = text_prompt
    content.append({"type": "text", "text": text})
    system = system_prompt or (SYSTEM_PROMPT if require_context else SYSTEM_PROMPT_NO_CONTEXT)
    return [
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": content},
    ]


def item_kind(item: dict) -> str:
    for kind in ("image", "audio", "video"):  # the template's test order
        if item.get("type") == kind or kind in item or f"{kind}_url" in item:
            return kind
    return "text"


def render_chat(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The Qwen2.5-Omni chat template, rendered in Python (the shipped tiny tokenizer has none).

    Media items become <|vision_bos|><|VIDEO|><|vision_eos|>, <|vision_bos|><|IMAGE|><|vision_eos|>
    or <|audio_bos|><|AUDIO|><|audio_eos|>; a conversation without a system message gets the
    default one.
    """
    out = []
    if messages and messages[0]["role"] != "system":
        out.append(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    for message in messages:
        out.append(f"<|im_start|>{message['role']}\n")
        content = message["content"]
        if isinstance(content, str):
            out.append(content)
        else:
            for item in content:
                kind = item_kind(item)
                if kind == "image":
                    out.append("<|vision_bos|><|IMAGE|><|vision_eos|>")
                elif kind == "audio":
                    out.append("<|audio_bos|><|AUDIO|><|audio_eos|>")
                elif kind == "video":
                    out.append("<|vision_bos|><|VIDEO|><|vision_eos|>")
                elif "text" in item:
                    out.append(item["text"])
        out.append("<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)
