"""Answer one question with a checkpoint: messages → processor inputs → greedy (or sampled) decode.

    loaded = checkpoints.open_checkpoint(path)
    messages = question_messages(loaded.data_cfg, "Who speaks first?", video="clip.mp4",
                                 options=["A. the man", "B. the woman"])
    result = answer(loaded, messages, max_new_tokens=2048, solution="B", problem_type="multiple choice")

`result` holds the completion, its `<context>` / `<think>` / `<answer>` blocks, the reward
components when a solution is given, and token counts and speed.
"""

from __future__ import annotations

import json
import os
import re
import time

import jax
import numpy as np
from etils import epath

from omni_jax.data import audio as audio_lib
from omni_jax.data import processor, prompt
from omni_jax.rewards import RewardFn
from omni_jax.rewards.config import reward_defaults
from omni_jax.rollout import generate

_BLOCKS = {name: re.compile(rf"<{name}>\s*(.*?)\s*</{name}>", re.DOTALL) for name in ("context", "think", "answer")}


def read_media(path):
    """A media argument as the pipeline takes it: local paths as they are, gs:// (any remote
    etils path) read into bytes."""
    if path is None or not isinstance(path, str) or "://" not in path or path.startswith("file://"):
        return path
    return epath.Path(path).read_bytes()


def parse_blocks(text: str) -> dict[str, str | None]:
    """The stripped contents of the first <context>, <think> and <answer> blocks (None when absent)."""
    return {name: (m.group(1).strip() if (m := pattern.search(text)) else None) for name, pattern in _BLOCKS.items()}


def question_messages(data_cfg, question: str, *, video=None, audio=None, image=None, options=None,
                      problem_type: str | None = None, video_audio: bool = True, instruction: str = "") -> list[dict]:
    """HumanOmniV2's evaluation messages for one question (system prompt per `data_cfg`).

    video / image: a path (local or gs://) or bytes; audio: a separate audio file; without one, the
    video's own track is used when it has one and `video_audio` (as in training and HumanOmniV2's
    eval). problem_type: default "multiple choice" with options, else "free-form".
    instruction: appended to the user's text on a new line (the instruction-following probe).
    """
    if (video is None) == (image is None):
        raise ValueError("give exactly one of video or image")
    problem_type = problem_type or ("multiple choice" if options else "free-form")
    if problem_type not in prompt.TYPE_TEMPLATE:
        raise ValueError(f"unknown problem_type {problem_type!r}; known: {sorted(prompt.TYPE_TEMPLATE)}")
    if problem_type in ("multiple choice", "emer_ov_mc") and not options:
        raise ValueError(f"a {problem_type} question needs options")
    video, image, audio = read_media(video), read_media(image), read_media(audio)
    wave = None
    src = audio if audio is not None else (video if video_audio else None)
    if src is not None and (data_cfg.with_audio or data_cfg.use_audio_in_video):
        wave = audio_lib.load_audio(src, data_cfg.sampling_rate, data_cfg.audio_max_seconds)
    record = {"problem": question, "problem_type": problem_type, "options": list(options or []),
              "video": video, "image": image, "audio": wave}
    messages = prompt.build_messages(
        record, has_audio=wave is not None, with_audio=data_cfg.with_audio,
        use_audio_in_video=data_cfg.use_audio_in_video, require_context=data_cfg.require_context,
        prompt_style=data_cfg.prompt_style, system_prompt=data_cfg.system_prompt)
    if data_cfg.use_audio_in_video and wave is not None:
        for item in messages[-1]["content"]:
            if item.get("type") == "video":
                item["video_audio"] = wave
    if instruction:
        add_instruction(messages, instruction)
    return messages


def add_instruction(messages: list[dict], instruction: str) -> list[dict]:
    """Append "\\n" + instruction to the last text item of the last user message (in place)."""
    for message in reversed(messages):
        if message["role"] != "user":
            continue
        if isinstance(message["content"], str):
            message["content"] += "\n" + instruction
            return messages
        for item in reversed(message["content"]):
            if item.get("type") == "text" or ("text" in item and prompt.item_kind(item) == "text"):
                item["text"] += "\n" + instruction
                return messages
    raise ValueError("no user text to append the instruction to")


def load_messages(path) -> list[dict]:
    """Qwen-omni messages from a JSON file; media paths relative to the file's folder; gs:// read."""
    p = epath.Path(path)
    messages = json.loads(p.read_text())
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise ValueError(f"{path}: expected a JSON list of {{'role', 'content'}} messages")
    base = str(p.parent)
    for message in messages:
        if isinstance(message.get("content"), list):
            for item in message["content"]:
                for kind in ("video", "audio", "image"):
                    value = item.get(kind)
                    if isinstance(value, str) and "://" not in value and not os.path.isabs(value):
                        value = os.path.join(base, value)
                    if isinstance(value, str):
                        item[kind] = read_media(value)
    return messages


def reward_components(completion: str, solution: str, problem_type: str, tokenizer=None) -> dict[str, float]:
    """The recipe's reward components of one completion (format, accuracy, people_focus, total)."""
    fn = RewardFn(None, reward_defaults())
    record = {"problem_type": problem_type, "solution": solution, "answer": solution}
    total, components, _ = fn([completion], None, None, [record])
    return {**{k: float(v[0]) for k, v in components.items()}, "total": float(total[0])}


def answer(loaded, messages: list[dict], *, max_new_tokens: int = 2048, temperature: float = 0.0, top_k: int = 0,
           top_p: float = 1.0, seed: int = 0, solution: str | None = None, problem_type: str | None = None,
           layout=None) -> dict:
    """Generate one completion for `messages` with `loaded` (checkpoints.Loaded). Greedy by default.
    layout: as `generate`'s (a `parallel.Layout`, a bare Mesh read as `Layout(mesh)`, or None)."""
    tok = loaded.tokenizer
    inputs = processor.prepare(messages, loaded.data_cfg, tok)
    prompt_tokens = int(inputs["input_ids"].shape[1])
    t0 = time.perf_counter()
    out = generate(loaded.model, {k: v for k, v in inputs.items()}, num_samples=1, max_new_tokens=max_new_tokens,
                   temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                   eos_token_ids=[tok.eos_token_id], pad_token_id=tok.pad_token_id, layout=layout)
    tokens = np.asarray(jax.device_get(out.tokens))[0]
    length = int(np.asarray(jax.device_get(out.lengths))[0])
    seconds = time.perf_counter() - t0
    completion = tok.decode(tokens[:length], skip_special_tokens=True)
    result = {"checkpoint": loaded.name, "completion": completion, **parse_blocks(completion),
              "prompt_tokens": prompt_tokens, "completion_tokens": length, "seconds": seconds,
              "tokens_per_s": length / max(seconds, 1e-9)}
    if solution is not None:
        if problem_type is None:
            raise ValueError("reward components need the problem_type of the solution")
        result["rewards"] = reward_components(completion, solution, problem_type)
    return result
