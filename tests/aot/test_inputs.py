"""The worst-case batch: the recipe's caps give the documented token counts, and the abstract inputs
have exactly the shapes and dtypes the real pipeline produces (prepare_inputs, experience.collect)."""

import pathlib

import jax
import numpy as np
import pytest

from omni_jax.aot import inputs as I
from omni_jax.model import from_hf_dict, presets, prepare_inputs
from tests.helpers import tiny_hf as th

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _stage4(variant="model=7b"):
    import importlib.util

    spec = importlib.util.spec_from_file_location("stage4", ROOT / "configs" / "stage4_people_focus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def test_recipe_worst_case_prompt():
    config = _stage4()
    prompt = I.worst_case_prompt(config.data)
    # 64 frames of 672×896 (602,112 pixels): 32 temporal grids of 48×64 patches of 14 px;
    # a merged token is 2×2 patches → 32·24·32 = 24,576 video tokens; 60 s of audio = 6,000 mel
    # frames at 100/s → 1,500 tokens at 25/s; plus 400 text tokens.
    assert prompt.video_grid == (32, 672 // 14, 896 // 14)
    assert prompt.audio_frames == 6000 and prompt.audio_tokens() == 1500
    assert prompt.tokens(2) == 24576 + 1500 + 400
    length = I.prompt_length(prompt, config.data)
    assert length == 28672  # the smallest stage-4 bucket holding 26,476 tokens
    assert length + config.rollout.max_new_tokens <= 32768  # Qwen2.5-Omni's positions


def test_prompt_longer_than_every_bucket_is_an_error():
    config = _stage4()
    with pytest.raises(ValueError, match="longer than the largest bucket"):
        I.prompt_length(I.Prompt((64, 48, 64), 6000, 400), config.data)


def _shapes(tree):
    return jax.tree.map(lambda x: (tuple(np.shape(x)), np.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype),
                        tree)


def test_abstract_inputs_match_prepare_inputs():
    cfg = from_hf_dict(th.thinker_config_dict("a"))
    rng = np.random.default_rng(0)
    grid, frames = (4, 4, 8), 37
    ids = th.expand("q <|vision_bos|><|VIDEO|><|vision_eos|> and <|audio_bos|><|AUDIO|><|audio_eos|> a?",
                    grids_video=[grid], audio_frames=[frames])
    feats, fmask = th.audio_features(rng, [frames, frames], cfg.audio.num_mel_bins, total=frames + 11)
    real = prepare_inputs(cfg, input_ids=np.array([ids, ids]), attention_mask=np.ones((2, len(ids))),
                          pixel_values_videos=th.pixels(rng, [grid, grid]), video_grid_thw=np.array([grid, grid]),
                          video_second_per_grid=np.array([1.0, 1.0]), input_features=feats,
                          feature_attention_mask=fmask)
    video_tokens, audio_tokens = int(np.prod(grid)) // 4, ((frames - 1) // 2 + 1 - 2) // 2 + 1
    prompt = I.Prompt(grid, frames, len(ids) - video_tokens - audio_tokens)
    abstract = I.model_inputs(cfg, prompt, batch=2, length=len(ids))
    assert _shapes(abstract) == _shapes(real)


def test_abstract_grpo_batch_matches_the_collected_one():
    from omni_jax.grpo.experience import collect
    from omni_jax.tokenizer import load_tokenizer

    tok = load_tokenizer("tiny")
    cfg = presets.architecture_config("tiny", tok)
    from flax import nnx

    from omni_jax.model.thinker import Thinker

    model = Thinker(cfg, rngs=nnx.Rngs(0))
    ids = tok("hello there, what happens?")["input_ids"]
    inputs = prepare_inputs(cfg, input_ids=np.array([ids, ids]), attention_mask=np.ones((2, len(ids))))
    rollout = type("R", (), dict(num_generations=2, max_new_tokens=3, temperature=1.0, top_p=1.0, top_k=0,
                                 cache_dtype=""))
    records = [{"id": 0}, {"id": 1}]
    exp = collect(model, inputs, records, rollout_cfg=rollout, scale_rewards="group", tokenizer=tok,
                  reward_fn=lambda texts, *_: ({"total": np.zeros(len(texts), np.float32)}, {}), seed=0, layout=None)
    abstract = I.grpo_batch(cfg, rows=4, length=len(ids), max_new_tokens=3, with_reference=False,
                            with_old_logp=False)
    assert _shapes(abstract) == _shapes(exp.batch)
