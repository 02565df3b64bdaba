"""One record -> one model input: validate, find the audio, build HumanOmniV2's messages, prepare."""

from __future__ import annotations

from omni_jax.data import audio as audio_lib
from omni_jax.data import processor, prompt, sources


def prepare_record(raw: dict, cfg, tokenizer=None) -> dict:
    """The HF processor kwargs of `processor.prepare` for a schema record, plus `record`: its metadata.

    The audio is decoded once: the video's own track (or the record's separate audio) is loaded
    here to learn whether there is one (HumanOmniV2's prompt says so either way) and handed on as
    a waveform. Raises BadRecord for any fault of the record.
    """
    rec = sources.validate_record(raw)
    wave = None
    if cfg.with_audio or cfg.use_audio_in_video:
        src = rec["audio"] if rec["audio"] is not None else rec["video"]
        if src is not None:
            wave = audio_lib.load_audio(src, cfg.sampling_rate, cfg.audio_max_seconds)
    has_audio = wave is not None
    messages = prompt.build_messages(
        {**rec, "audio": wave}, has_audio=has_audio, with_audio=cfg.with_audio,
        use_audio_in_video=cfg.use_audio_in_video, require_context=cfg.require_context,
        prompt_style=cfg.prompt_style, system_prompt=cfg.system_prompt)
    if cfg.use_audio_in_video and has_audio:
        for item in messages[-1]["content"]:
            if item.get("type") == "video":
                item["video_audio"] = wave
    inputs = processor.prepare(messages, cfg, tokenizer)
    inputs["record"] = sources.metadata(rec)
    return inputs
