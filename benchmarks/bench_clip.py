"""CLIP encoders: omni_jax.clip (jitted, batched) vs transformers' CLIPModel, side by side on CPU.

    python -m benchmarks.bench_clip [--preset vit_b32] [--layers 12] [--frames 16] [--events 16] [--repeats 5]

Both systems hold the same random weights of the chosen layout (saved by transformers, loaded by
omni_jax through its name table) and encode the same batch of preprocessed frames and the same
padded 77-token event texts; outputs are checked equal (1e-4) before timing. Reports frames/s
(image tower + projection) and events/s (text tower + projection), medians of --repeats runs after
one warm-up (compile apart), then the whole post-processor's time per answer
(`add_timestamps` on an mp4 of --seconds s at the Thinker's 2 fps, one event per sentence).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001 - description only
        pass
    return platform.processor() or "?"


def interleaved(a, b, repeats: int) -> tuple[float, float]:
    """Median seconds of a() and of b(), run alternately after one warm-up each (a shared machine's
    load then weighs on both alike)."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return float(np.median(ta)), float(np.median(tb))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="vit_b32", choices=("vit_b32", "vit_l14"))
    p.add_argument("--layers", type=int, default=None, help="fewer layers per tower than the preset (a smaller run)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--events", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args(argv)

    import torch
    from transformers import CLIPConfig as HFConfig
    from transformers import CLIPModel as HFModel

    from omni_jax.clip import config as clip_config
    from omni_jax.weights.clip_load import load_clip
    from omni_jax.clip.model import normalize

    hf_dict = json.loads((clip_config.PRESETS_DIR / clip_config.PRESETS[args.preset]).read_text())
    if args.layers:
        hf_dict["text_config"]["num_hidden_layers"] = hf_dict["vision_config"]["num_hidden_layers"] = args.layers
    torch.manual_seed(0)
    hf_cfg = HFConfig(**hf_dict)
    hf_cfg._attn_implementation = "sdpa"
    hf = HFModel(hf_cfg).eval()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_clip_"))
    hf.save_pretrained(tmp)
    ours = load_clip(tmp)
    from flax import nnx

    graphdef, state = nnx.split(ours)
    image_fn = jax.jit(lambda s, px: normalize(nnx.merge(graphdef, s).get_image_features(px)))
    text_fn = jax.jit(lambda s, ids, m: normalize(nnx.merge(graphdef, s).get_text_features(ids, m)))

    rng = np.random.default_rng(0)
    size = hf_dict["vision_config"]["image_size"]
    pixels = rng.standard_normal((args.frames, 3, size, size)).astype(np.float32)
    ids = rng.integers(1000, 40000, (args.events, 77)).astype(np.int32)
    ids[:, 0], ids[:, 12:] = 49406, 49407  # start, 11 words, end-of-text then padding
    mask = np.zeros_like(ids)
    mask[:, :13] = 1
    px_t, ids_t, mask_t = torch.tensor(pixels), torch.tensor(ids, dtype=torch.long), torch.tensor(mask)

    def torch_images():
        with torch.inference_mode():
            x = hf.get_image_features(pixel_values=px_t).pooler_output
            return x / x.norm(dim=-1, keepdim=True)

    def torch_texts():
        with torch.inference_mode():
            x = hf.get_text_features(input_ids=ids_t, attention_mask=mask_t).pooler_output
            return x / x.norm(dim=-1, keepdim=True)

    px_j, ids_j, mask_j = jnp.asarray(pixels), jnp.asarray(ids), jnp.asarray(mask)
    t0 = time.perf_counter()
    jax_img = image_fn(state, px_j).block_until_ready()
    jax_txt = text_fn(state, ids_j, mask_j).block_until_ready()
    compile_s = time.perf_counter() - t0
    np.testing.assert_allclose(np.asarray(jax_img), torch_images().numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(jax_txt), torch_texts().numpy(), atol=1e-4)

    # The post-processor pads event texts to a 16-token bucket, not to 77: both systems on that input too.
    ids16, mask16 = ids_j[:, :16], mask_j[:, :16]
    ids16_t, mask16_t = ids_t[:, :16], mask_t[:, :16]

    def torch_texts16():
        with torch.inference_mode():
            x = hf.get_text_features(input_ids=ids16_t, attention_mask=mask16_t).pooler_output
            return x / x.norm(dim=-1, keepdim=True)

    np.testing.assert_allclose(np.asarray(text_fn(state, ids16, mask16)), torch_texts16().numpy(), atol=1e-4)
    rows = []
    for what, n, ours_fn, ref_fn in (
            ("frames/s (image tower)", args.frames, lambda: image_fn(state, px_j).block_until_ready(), torch_images),
            ("events/s (text tower, 77 tokens)", args.events,
             lambda: text_fn(state, ids_j, mask_j).block_until_ready(), torch_texts),
            ("events/s (text tower, 16 tokens)", args.events,
             lambda: text_fn(state, ids16, mask16).block_until_ready(), torch_texts16)):
        t_ours, t_ref = interleaved(ours_fn, ref_fn, args.repeats)
        rows.append((what, n / t_ours, n / t_ref))

    per_answer = answer_time(tmp, ours, args.seconds)
    layers = hf_dict["vision_config"]["num_hidden_layers"], hf_dict["text_config"]["num_hidden_layers"]
    print(f"CLIP {args.preset} layout (vision {layers[0]} layers, text {layers[1]} layers), random weights, float32")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"batch: {args.frames} frames of {size}x{size}, {args.events} texts (13 real tokens) padded to 77 or 16; "
          f"omni_jax compile {compile_s:.1f} s\n")
    print("| measure | omni_jax | transformers | ratio |")
    print("|---|---|---|---|")
    for what, a, b in rows:
        print(f"| {what} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
    print(f"\npost-processor per answer ({per_answer['frames']} Thinker frames, {per_answer['events']} events, "
          f"warm): {per_answer['seconds']:.2f} s; stages timed apart: CLIP encoding {per_answer['encode_s']:.2f} s, "
          f"frame decode + events + DP + insertion {per_answer['other_s']:.2f} s")


def answer_time(clip_dir: pathlib.Path, model, seconds: float) -> dict:
    """Wall time of add_timestamps on a synthetic mp4 (second call: compiled)."""
    import imageio_ffmpeg

    from omni_jax.clip.tokenizer import CLIPTokenizer
    from omni_jax.data.synthetic_events import completion_for, make_event_video
    from omni_jax.timestamps import ClipMatcher, add_timestamps
    from omni_jax.timestamps.events import rule_events
    from omni_jax.timestamps.frames import thinker_frames
    from omni_jax.timestamps.insert import insert_marks
    from omni_jax.timestamps.match import match

    fps = 2.0
    video = make_event_video(0, num_frames=int(seconds * fps), num_events=min(6, int(seconds * fps)), size=224, fps=fps)
    path = clip_dir / "answer.mp4"
    writer = imageio_ffmpeg.write_frames(str(path), (224, 224), fps=fps, quality=8)
    writer.send(None)
    for f in video.frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    clip = ClipMatcher(model, _word_tokenizer(CLIPTokenizer, video.descriptions))
    completion = completion_for(video)
    add_timestamps(completion, str(path), clip)  # compile
    t0 = time.perf_counter()
    _, table = add_timestamps(completion, str(path), clip)
    total = time.perf_counter() - t0
    # The stages apart (the same calls add_timestamps makes).
    t1 = time.perf_counter()
    frames = thinker_frames(str(path)).frames
    events = rule_events(completion)
    t2 = time.perf_counter()
    sim = clip.similarity(frames, [e.query for e in events])
    t3 = time.perf_counter()
    chosen = match(sim)
    insert_marks(completion, events, chosen, chosen * 0.5)
    t4 = time.perf_counter()
    return {"seconds": total, "encode_s": t3 - t2, "other_s": (t2 - t1) + (t4 - t3), "frames": table.num_frames,
            "events": len(table.rows)}


def _word_tokenizer(cls, texts):
    """A word-level tokenizer with CLIP's special ids (the real BPE file is not shipped)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = sorted({w for t in texts for w in t.lower().split()} | {"first", "then"})
    vocab = {"<unk>": 0, **{w: i + 1 for i, w in enumerate(words)}, "<|startoftext|>": 49406, "<|endoftext|>": 49407}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 49406), ("<|endoftext|>", 49407)])
    return cls(tok, 77, 49407)


if __name__ == "__main__":
    main()
