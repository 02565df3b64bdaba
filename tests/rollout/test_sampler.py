"""generate(): greedy parity with transformers, cached decode = full forward, EOS masks, seeds, bad input."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import omni_jax
from omni_jax import parallel
from omni_jax.model import prepare_inputs
from omni_jax.kernels import cpu_gemv as _cpu_gemv
from omni_jax.rollout import generate, sampler
from tests.helpers import tiny_hf as th

M = 10


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    hf = th.build_hf_thinker("a", seed=11)
    path = tmp_path_factory.mktemp("tiny_rollout")
    hf.save_pretrained(path)
    return hf, omni_jax.load_thinker(path, progress=False), path


def _text_batch():
    return dict(zip(("input_ids", "attention_mask"),
                    th.left_pad([th.expand("hello world, how are you?"), th.expand("hi"), th.expand("abc def")])))


def _text_batch4():
    """4 prompts: they divide over a 4-way batch mesh, so the sampler keeps each prompt's cache once
    (3 prompts do not, and their cache is copied per candidate)."""
    texts = ["hello world, how are you?", "hi", "abc def", "one more question here"]
    return dict(zip(("input_ids", "attention_mask"), th.left_pad([th.expand(t) for t in texts])))


def _video_audio():
    rng = np.random.default_rng(5)
    gv = [(2, 8, 8)]
    feats, fm = th.audio_features(rng, [88], th.VARIANTS["a"]["mel"])
    ids = th.expand("watch <|vision_bos|><|VIDEO|><|vision_eos|><|audio_bos|><|AUDIO|><|audio_eos|> then answer",
                    grids_video=gv, audio_frames=[88])
    return dict(input_ids=np.array([ids]), attention_mask=np.ones((1, len(ids)), np.int64),
                pixel_values_videos=th.pixels(rng, gv), video_grid_thw=np.array(gv),
                video_second_per_grid=np.array([1.0]), input_features=feats, feature_attention_mask=fm)


def _hf_greedy(hf, inputs, eos):
    tin = {k: torch.tensor(v) for k, v in inputs.items()}
    with torch.no_grad():
        out = hf.generate(**tin, max_new_tokens=M, do_sample=False, eos_token_id=eos, pad_token_id=th.PAD)
    return out[:, inputs["input_ids"].shape[1]:].numpy()


@pytest.mark.parametrize("cpu_decode_kernel", [True, False], ids=["CPU decode kernel", "XLA dot"])
@pytest.mark.parametrize("kind", ["text, left padded batch", "video + audio"])
def test_greedy_tokens_equal_transformers(pair, kind, cpu_decode_kernel):
    hf, model, _ = pair
    inputs = _text_batch() if kind.startswith("text") else _video_audio()
    ref = _hf_greedy(hf, inputs, eos=149)
    out = generate(model, inputs, max_new_tokens=M, temperature=0.0, eos_token_ids=[149], pad_token_id=th.PAD,
                   cpu_decode_kernel=cpu_decode_kernel)
    got = np.asarray(out.tokens)
    mask = np.asarray(out.mask)
    # transformers pads after EOS with pad_token_id and may stop early; compare over our mask.
    ref = np.pad(ref, ((0, 0), (0, M - ref.shape[1])), constant_values=th.PAD)
    np.testing.assert_array_equal(np.where(mask, got, -1), np.where(mask, ref, -1))


@pytest.mark.parametrize("unroll_layers,cpu_decode_kernel", [(True, True), (True, False), (False, False)],
                         ids=["CPU decode kernel (CPU default)", "layers unrolled, XLA dot", "layer scan (TPU)"])
def test_cached_decode_logits_equal_full_forward(pair, unroll_layers, cpu_decode_kernel):
    _, model, _ = pair
    inputs = _video_audio()
    out = generate(model, inputs, max_new_tokens=M, temperature=0.8, seed=3, return_logits=True,
                   unroll_layers=unroll_layers, cpu_decode_kernel=cpu_decode_kernel)
    full = dict(inputs)
    full["input_ids"] = np.concatenate([inputs["input_ids"], np.asarray(out.tokens)], 1)
    full["attention_mask"] = np.concatenate([inputs["attention_mask"], np.asarray(out.mask)], 1)
    logits = model(**full)
    t = inputs["input_ids"].shape[1]
    mask = np.asarray(out.mask)
    diff = np.abs(logits[:, t - 1:t - 1 + M] - np.asarray(out.logits))[mask].max()
    print(f"cached decode ({'unrolled' if unroll_layers else 'scan'}) vs full forward: max|Δlogit| = {diff:.2e}")
    assert diff <= 1e-4


def test_cpu_decode_kernel_is_the_default_on_one_cpu_device_where_it_is_faster(pair, monkeypatch):
    _, model, _ = pair
    seen, real = [], sampler._decode
    monkeypatch.setattr(sampler, "_decode", lambda *a: seen.append(a[6]) or real(*a))  # a[6]: cpu_decode_kernel
    monkeypatch.delenv("OMNI_JAX_CPU_GEMV", raising=False)
    monkeypatch.setattr(_cpu_gemv, "faster_than_xla", lambda: True)  # the calibration's decision
    generate(model, _text_batch(), max_new_tokens=M, temperature=0.0)
    monkeypatch.setattr(_cpu_gemv, "faster_than_xla", lambda: False)
    generate(model, _text_batch(), max_new_tokens=M, temperature=0.0)
    monkeypatch.setattr(_cpu_gemv, "faster_than_xla", lambda: True)
    monkeypatch.setenv("OMNI_JAX_CPU_GEMV", "0")
    generate(model, _text_batch(), max_new_tokens=M, temperature=0.0)
    assert seen == [True, False, False]


def test_generate_runs_the_steps_its_builder_makes(pair, monkeypatch):
    """`generate` runs the prefill and decode of `build_rollout_steps` (the builder the fit check
    lowers) on the builder's argument tuples: its static arguments are the ones decode receives."""
    _, model, _ = pair
    built, seen = [], []
    real_build, real_decode = sampler.build_rollout_steps, sampler._decode
    monkeypatch.setattr(sampler, "build_rollout_steps", lambda *a, **k: built.append(real_build(*a, **k)) or built[-1])
    monkeypatch.setattr(sampler, "_decode", lambda *a: seen.append(a) or real_decode(*a))
    generate(model, _text_batch(), num_samples=2, max_new_tokens=M, temperature=0.0, eos_token_ids=[5])
    (steps,), (args,) = built, seen
    assert (steps.num_samples, steps.max_new_tokens, steps.eos, steps.prompts_per_pass) == (2, M, (5,), 3)
    want = steps.decode_args(None, None, (None,) * 5, None, None)
    assert [args[i] for i in steps.decode_static] == [want[i] for i in steps.decode_static]


def test_cpu_decode_kernel_only_for_a_silu_mlp(pair, monkeypatch):
    _, model, path = pair
    model = omni_jax.load_thinker(path, progress=False)
    model.cfg = dataclasses.replace(model.cfg, text=dataclasses.replace(model.cfg.text, hidden_act="gelu"))
    with pytest.raises(ValueError, match="SwiGLU"):
        generate(model, _text_batch(), max_new_tokens=M, temperature=0.0, cpu_decode_kernel=True)
    seen, real = [], sampler._decode
    monkeypatch.setattr(sampler, "_decode", lambda *a: seen.append(a[6]) or real(*a))  # a[6]: cpu_decode_kernel
    generate(model, _text_batch(), max_new_tokens=2, temperature=0.0)
    assert seen == [False]  # the default falls back to XLA's ops


def test_packed_weights_are_reused_only_while_the_weights_are_the_same(pair, monkeypatch):
    _, model, path = pair
    model = omni_jax.load_thinker(path, progress=False)  # a copy of our own: its weights change below
    packs, real = [], sampler._pack_decoder
    monkeypatch.setattr(sampler, "_pack_decoder", lambda *a: packs.append(1) or real(*a))
    inputs = _text_batch()
    first = np.asarray(generate(model, inputs, max_new_tokens=M, temperature=0.0, cpu_decode_kernel=True).tokens)
    again = np.asarray(generate(model, inputs, max_new_tokens=M, temperature=0.0, cpu_decode_kernel=True).tokens)
    assert len(packs) == 1 and np.array_equal(first, again)
    # New weights (as after a train step): packed again, and the tokens follow the new weights.
    layer_mlp = model.model.layers.mlp.down_proj.kernel
    layer_mlp[...] = layer_mlp[...] * 3.0
    changed = np.asarray(generate(model, inputs, max_new_tokens=M, temperature=0.0, cpu_decode_kernel=True).tokens)
    want = np.asarray(generate(model, inputs, max_new_tokens=M, temperature=0.0, cpu_decode_kernel=False).tokens)
    assert len(packs) == 2
    np.testing.assert_array_equal(changed, want)
    assert not np.array_equal(changed, first)


def test_completion_mask_stops_after_first_eos(pair):
    _, model, _ = pair
    inputs = _text_batch()
    greedy = np.asarray(generate(model, inputs, max_new_tokens=M, temperature=0.0).tokens)
    row0 = greedy[0]
    stop = next(i for i in range(2, M) if row0[i] not in row0[:i])  # first fresh token at step >= 2
    out = generate(model, inputs, max_new_tokens=M, temperature=0.0, eos_token_ids=[int(row0[stop])],
                   pad_token_id=th.PAD)
    tokens, mask, lengths = np.asarray(out.tokens), np.asarray(out.mask), np.asarray(out.lengths)
    assert lengths[0] == stop + 1
    assert mask[0].tolist() == [True] * (stop + 1) + [False] * (M - stop - 1)
    assert (tokens[0, stop + 1:] == th.PAD).all()
    np.testing.assert_array_equal(tokens[0, :stop + 1], row0[:stop + 1])
    assert (np.asarray(out.logprobs)[0, stop + 1:] == 0).all()


def test_candidates_share_one_prefill_and_sampling_is_reproducible(pair):
    _, model, _ = pair
    inputs = _text_batch()
    greedy = np.asarray(generate(model, inputs, max_new_tokens=M, temperature=0.0).tokens)
    grouped = np.asarray(generate(model, inputs, num_samples=3, max_new_tokens=M, temperature=0.0).tokens)
    np.testing.assert_array_equal(grouped, np.repeat(greedy, 3, axis=0))  # rows i*N..i*N+N-1 = prompt i
    a = generate(model, inputs, num_samples=4, max_new_tokens=M, temperature=1.0, top_k=20, seed=7)
    b = generate(model, inputs, num_samples=4, max_new_tokens=M, temperature=1.0, top_k=20, seed=7)
    c = generate(model, inputs, num_samples=4, max_new_tokens=M, temperature=1.0, top_k=20, seed=8)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))
    assert len({tuple(r) for r in np.asarray(a.tokens)[:4]}) > 1  # candidates of one prompt differ


def test_bad_input_fails_before_tracing(pair):
    _, model, _ = pair
    inputs = _text_batch()
    with pytest.raises(ValueError, match="does not fit the cache"):
        generate(model, inputs, max_new_tokens=50, max_cache_length=40)
    with pytest.raises(ValueError, match="num_samples"):
        generate(model, inputs, num_samples=0, max_new_tokens=4)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, inputs, max_new_tokens=4, top_p=0.0)


MESH_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, jax
    sys.path.insert(0, {root!r})
    import omni_jax
    from omni_jax import parallel
    from omni_jax.checkpoint.loading import load_thinker
    from omni_jax.rollout import generate
    from tests.rollout.test_sampler import _video_audio, _text_batch, _text_batch4
    assert len(jax.devices()) == 8
    results = {{}}
    single = omni_jax.load_thinker({path!r}, progress=False)
    mesh = parallel.make_mesh({{"data": 2, "fsdp": 2, "tp": 2}})
    sharded = load_thinker({path!r}, layout=parallel.Layout(mesh), progress=False)
    # Greedy and sampled on text; sampled (same seed, so the same tokens) on the rest.
    for name, inputs in (("text", _text_batch()), ("text4", _text_batch4()), ("video_audio", _video_audio())):
        for temp in ((0.0, 1.0) if name == "text" else (1.0,)):
            kw = dict(num_samples=4, max_new_tokens=6, temperature=temp, top_k=30, seed=5)
            a = generate(single, inputs, **kw)
            b = generate(sharded, inputs, layout=mesh, **kw)  # a bare mesh: the default rules
            assert len(b.tokens.sharding.device_set) == 8, b.tokens.sharding
            results[f"{{name}}/{{temp}}"] = dict(
                tokens_equal=bool(np.array_equal(np.asarray(a.tokens), np.asarray(b.tokens))),
                logprob_diff=float(np.abs(np.asarray(a.logprobs) - np.asarray(b.logprobs)).max()))
    print("RESULT" + json.dumps(results))
""")


def test_sharded_8_devices_equals_single_device(pair):
    _, _, path = pair
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", MESH_SCRIPT.format(root=root, path=str(path))],
                          capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    results = json.loads(line[len("RESULT"):])
    print(results)
    for key, r in results.items():
        assert r["tokens_equal"], key
        assert r["logprob_diff"] < 1e-4, key


def test_prefill_one_prompt_at_a_time_equals_all_at_once(pair):
    _, model, _ = pair
    inputs = prepare_inputs(model.cfg, **_text_batch())
    graphdef, state = nnx.split(model)
    args = (graphdef, state, inputs, jnp.float32, 2)
    together, one_by_one = sampler._prefill(*args, 3), sampler._prefill(*args, 1)
    for a, b in zip(jax.tree.leaves(together), jax.tree.leaves(one_by_one)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_prompts_per_prefill_splits_only_batches_that_do_not_divide():
    from omni_jax.rollout.sampler import prompts_per_prefill

    mesh = lambda data, fsdp, rules=parallel.DEFAULT_RULES: parallel.Layout(  # noqa: E731
        SimpleNamespace(shape={"data": data, "fsdp": fsdp, "tp": 1}), rules)
    assert prompts_per_prefill(8, mesh(1, 4)) == 8  # two prompts per chip, in one pass
    assert prompts_per_prefill(8, mesh(2, 4)) == 8
    assert prompts_per_prefill(8, mesh(1, 16)) == 1  # replicated on 16 chips: one prompt at a time
    assert prompts_per_prefill(8, None) == 8
    assert sampler.batch_shards(mesh(2, 4)) == 8 and sampler.batch_shards(None) == 1
    assert sampler.batch_shards(mesh(2, 4, {**dict(parallel.DEFAULT_RULES), "batch": "fsdp"})) == 4
    # The prompts' cache is kept once exactly when they divide; else one at a time, copied per candidate.
    assert sampler.prefill_plan(8, mesh(1, 4)) == (8, True)
    assert sampler.prefill_plan(8, mesh(1, 16)) == (1, False)
    assert sampler.prefill_plan(3, None) == (3, True)


def test_candidates_read_their_own_prompt_from_a_cache_kept_once_per_prompt(pair):
    _, model, _ = pair
    inputs = prepare_inputs(model.cfg, **_text_batch())
    graphdef, state = nnx.split(model)
    cache, logits, valid, next_pos, _ = sampler._prefill(graphdef, state, inputs, jnp.float32, 3, 3)
    b, t = inputs.input_ids.shape
    assert cache["k"].shape[1:3] == (b, t) and valid.shape == (b, t)  # per prompt, not per candidate
    assert logits.shape[0] == next_pos.shape[0] == 3 * b
    # Greedy: the 3 candidates of prompt i are rows 3i..3i+2 and each equals prompt i's single greedy answer.
    one = generate(model, inputs, num_samples=1, max_new_tokens=M, temperature=0.0, eos_token_ids=[])
    three = generate(model, inputs, num_samples=3, max_new_tokens=M, temperature=0.0, eos_token_ids=[])
    np.testing.assert_array_equal(np.asarray(three.tokens), np.repeat(np.asarray(one.tokens), 3, axis=0))
    np.testing.assert_allclose(np.asarray(three.logprobs), np.repeat(np.asarray(one.logprobs), 3, axis=0), atol=1e-6)
    assert len({tuple(r) for r in np.asarray(one.tokens)}) > 1  # the prompts' answers differ
