"""Every knob of the input pipeline, as one ml_collections ConfigDict.

`data_defaults()` gives the recipe's values (HumanOmniV2 Stage 4, qwen-omni-utils' rules with the
recipe's caps); `data_defaults("tiny")` gives small frames and short clips for the CPU default job
on the synthetic data. A training config embeds the result as `config.data` and overrides fields
with `--config.data.max_frames=32` etc.

The caps (max_frames, max_pixels, total_pixels, max_prompt_tokens) are read in exactly one place
each: `video.resolve_limits` for the media caps and `processor.prepare` for the prompt cap. A
message item may carry its own `max_frames` / `max_pixels` / `total_pixels`; those can only lower
the caps here, never raise them.
"""

from __future__ import annotations

import os

import ml_collections

# qwen-omni-utils' constants (pixels are multiples of 28x28 = one merged vision token).
_TOKEN_PIXELS = 28 * 28
# Sources that can be read from a HumanOmniV2 json/jsonl manifest ("custom": one's own data).
MANIFEST_SOURCES = ("social_iq2", "emer", "video_r1", "intentbench", "custom")
# Sources with a TFDS builder (omni_jax.data.sources.registry), read when no manifest is given.
TFDS_SOURCES = ("social_iq2", "emer", "video_r1", "intentbench", "synthetic_tfds")


def data_defaults(arg: str | None = None) -> ml_collections.ConfigDict:
    """The input pipeline's config. `arg`: None (the recipe) or "tiny" (synthetic data, CPU)."""
    c = ml_collections.ConfigDict()

    # --- video frames (qwen-omni-utils smart_nframes) ---
    c.fps = 2.0  # frames sampled per second of video
    c.min_frames = 4
    c.max_frames = 64  # the recipe's training cap (qwen-omni-utils' own default, 768, is the bug)
    c.decode_threads = 1  # decord decoder threads per video; parallelism comes from workers

    # --- frame size (smart_resize to multiples of patch_size * merge_size) ---
    c.min_pixels = 128 * _TOKEN_PIXELS  # 100,352
    c.max_pixels = 768 * _TOKEN_PIXELS  # 602,112 per frame (the recipe's max_pixels)
    # Whole-video pixel budget: each frame gets at most total_pixels / n_frames * 2
    # (qwen-omni-utils' VIDEO_TOTAL_PIXELS = 128000 tokens * 0.9).
    c.total_pixels = int(128000 * _TOKEN_PIXELS * 0.9)
    c.image_min_pixels = 4 * _TOKEN_PIXELS
    c.image_max_pixels = 16384 * _TOKEN_PIXELS

    # --- vision encoder geometry (Qwen2.5-Omni's processor) ---
    c.patch_size = 14
    c.temporal_patch_size = 2
    c.merge_size = 2
    c.image_mean = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP
    c.image_std = (0.26862954, 0.26130258, 0.27577711)

    # --- audio (Whisper log-mel, 128 bins) ---
    c.sampling_rate = 16000
    c.num_mel_bins = 128
    c.n_fft = 400
    c.hop_length = 160
    # Longer audio is cut here (WhisperFeatureExtractor's truncation at 300 s).
    c.audio_max_seconds = 300.0
    # Features are padded to the true length rounded up to this many seconds, not to 300 s as
    # WhisperFeatureExtractor does: the audio encoder only reads the frames that
    # feature_attention_mask marks, so the padding was pure cost (30,000 frames per clip).
    # Valid frames are identical to the 300 s version (tested).
    c.audio_bucket_seconds = 30.0

    # --- prompt ---
    c.with_audio = True  # add the video's own track as a separate audio item (HumanOmniV2)
    c.use_audio_in_video = False  # True: interleave video and audio in 2 s chunks instead
    c.seconds_per_chunk = 2.0
    c.position_id_per_seconds = 25
    c.require_context = True  # system prompt asks for <context>, as HumanOmniV2's does
    c.system_prompt = ""  # "" = HumanOmniV2's (per require_context); any other text replaces it
    c.prompt_style = "train"  # "train" or "eval": HumanOmniV2's two question layouts
    c.max_prompt_tokens = 32768  # longer prompts are skipped with reason "prompt_over_cap"

    # --- batching and the mixture ---
    c.batch_size = 1  # prompts per process per batch
    c.prompt_buckets = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
    # Every source the run can read has an entry (0 = unused), so any can be switched on from the
    # command line: --config.data.mixture.emer=1.0. "custom" is a slot for one's own manifest.
    c.mixture = ml_collections.ConfigDict({"social_iq2": 0.5, "emer": 0.3, "video_r1": 0.2, "intentbench": 0.0,
                                           "custom": 0.0, "synthetic": 0.0})
    c.data_dir = ""  # TFDS data_dir holding the prepared datasets ("" = TFDS default)
    c.split = "train"
    # TFDS builder config per source: "embedded" (media bytes in the records), "by_path", or for
    # video_r1 "sample" (a seeded 6,000-row sample, embedded).
    c.tfds_configs = ml_collections.ConfigDict(
        {"social_iq2": "embedded", "emer": "embedded", "video_r1": "sample", "intentbench": "embedded"})
    # Read a source straight from a HumanOmniV2 json/jsonl manifest instead of a prepared TFDS
    # dataset: manifests.<source> = the file; manifest_roots.<source> = the media root its paths
    # are relative to (HumanOmniV2's data_root; "" = the manifest's folder).
    names = MANIFEST_SOURCES
    c.manifests = ml_collections.ConfigDict({k: "" for k in names})
    c.manifest_roots = ml_collections.ConfigDict({k: "" for k in names})
    # The generated source (omni_jax.data.synthetic): 8 frames of 56x56 at 4 fps, 2 s of audio.
    c.synthetic = ml_collections.ConfigDict({"num_examples": 2048, "seed": 0, "size": 56, "num_frames": 8,
                                             "fps": 4.0})
    c.seed = 0
    # Host memory: a prepared 64-frame clip at max_pixels is ~460 MB of float32 patches, and up to
    # 2 * num_workers examples plus prefetch_batches batches are held at once.
    c.num_workers = 2  # threads preparing examples in parallel
    c.prefetch_batches = 2
    # A source whose first this-many records (or all of them, if fewer) are all bad stops the run.
    c.fail_fast_bad_records = 32

    if arg == "tiny":
        c.max_frames = 4
        c.min_frames = 4
        c.min_pixels = 56 * 56
        c.max_pixels = 56 * 56
        c.audio_bucket_seconds = 2.0
        c.prompt_buckets = (256, 512, 640, 768, 1024)  # synthetic prompts are 575-584 tokens
        c.max_prompt_tokens = 1024
        c.mixture = ml_collections.ConfigDict({k: 0.0 for k in c.mixture})
        c.mixture.synthetic = 1.0
    elif arg not in (None, "", "recipe"):
        raise ValueError(f"unknown data config variant {arg!r}: use None/'recipe' or 'tiny'")
    return c


def problems(c) -> list[str]:
    """What in a data config the run would silently not use or cannot use, each with what to set.

    A manifest whose source has no weight in the mixture would never be read; a weighted source
    must have something to read (the generated synthetic data, a manifest, or a TFDS dataset).
    """
    out = []
    weights = dict(c.mixture)
    manifests = {k: v for k, v in dict(c.manifests).items() if v}
    roots = {k: v for k, v in dict(c.manifest_roots).items() if v}
    for name, w in weights.items():
        if float(w) < 0:
            out.append(f"data.mixture.{name}={w}: weights must be >= 0")
    if not any(float(w) > 0 for w in weights.values()):
        out.append(f"data.mixture gives no source a positive weight ({weights}); e.g. --config.data.mixture.synthetic=1.0")
    for name, path in manifests.items():
        if float(weights.get(name, 0)) <= 0:
            others = [k for k, w in weights.items() if float(w) > 0 and k != name]
            alone = "".join(f" --config.data.mixture.{k}=0" for k in others)
            out.append(f"data.manifests.{name}={path} is set but data.mixture.{name} is {weights.get(name, 0)}, so the "
                       f"manifest would never be read; to train on it set --config.data.mixture.{name}=1.0"
                       + (f" (and{alone} to train on it alone)" if alone else ""))
        elif "://" not in path and not os.path.isfile(path):
            out.append(f"data.manifests.{name}={path}: no such file")
    for name, root in roots.items():
        if name not in manifests:
            out.append(f"data.manifest_roots.{name}={root} is set without data.manifests.{name}: it would be ignored")
    for name, w in weights.items():
        if float(w) > 0 and name != "synthetic" and name not in manifests and name not in TFDS_SOURCES:
            out.append(f"data.mixture.{name}={w} but source {name!r} has no data: set "
                       f"--config.data.manifests.{name}=/path/to/manifest.json (a HumanOmniV2 json/jsonl file)")
    return out
