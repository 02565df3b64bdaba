"""omni_jax.kernels.cpu_gemv: the CPU decode kernel (an XLA FFI custom call built with g++ on first use)."""

import json
import os
import platform
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_jax.kernels import cpu_decode, cpu_gemv
from omni_jax.model.config import TextConfig
from omni_jax.model.rope import mrope_cos_sin
from omni_jax.model.text import TextModel, causal_mask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cpu_flags() -> set[str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


def test_kernel_builds_here():
    # CI machines and these dev machines have g++: the kernel must build (not silently fall back).
    assert cpu_gemv.available(), cpu_gemv.build_error()
    flags = _cpu_flags()  # -march=native: the register tile of this CPU's widest vectors
    if "avx512f" in flags:
        assert cpu_gemv.tile_shape() == (16, 8)
    elif "avx2" in flags:
        assert cpu_gemv.tile_shape() == (8, 2)


@pytest.mark.parametrize("transposed", [False, True], ids=["[L, K, N]", "[L, N, K]"])
def test_pack_layout(transposed):
    w = np.arange(2 * 5 * 70, dtype=np.float32).reshape(2, 5, 70)  # a stack of 2 [5, 70] matrices
    p = cpu_gemv.pack(jnp.asarray(w.transpose(0, 2, 1) if transposed else w), transposed=transposed)
    assert p.data.shape == (2, 3, 5, 32) and p.shape == (5, 70) and p.layer == 0
    data = np.asarray(p.data)
    for layer in range(2):
        for s in range(3):
            cols = w[layer, :, s * 32:(s + 1) * 32]
            np.testing.assert_array_equal(data[layer, s, :, :cols.shape[1]], cols)
    assert (data[:, 2, :, 70 - 64:] == 0).all()  # padding of the last strip
    single = cpu_gemv.pack(jnp.asarray(w[1]))
    np.testing.assert_array_equal(single.data[0], data[1])
    with pytest.raises(IndexError):
        p.at_layer(2)


def test_big_pack_through_the_pool():
    w = np.random.default_rng(0).standard_normal((3, 300, 500)).astype(np.float32)  # 450k > the pool's threshold
    for transposed in (False, True):
        src = w.transpose(0, 2, 1).copy() if transposed else w
        data = np.asarray(cpu_gemv.pack(jnp.asarray(src), transposed=transposed).data)  # [3, 16, 300, 32]
        back = data.transpose(0, 2, 1, 3).reshape(3, 300, 16 * 32)
        np.testing.assert_array_equal(back[..., :500], w)
        assert (back[..., 500:] == 0).all()


def test_matmul_reads_the_named_layer_of_a_stack():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 64, 96)).astype(np.float32)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    packed = jax.jit(cpu_gemv.pack)(jnp.asarray(w))
    for layer in range(4):
        y = jax.jit(cpu_gemv.matmul)(x, packed.at_layer(layer))
        np.testing.assert_allclose(y, x @ w[layer], atol=1e-4)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 5, 31), (8, 64, 32), (9, 64, 33), (20, 7, 100),
                                   (9, 256, 1000), (64, 320, 640), (2, 640, 3000)])
def test_matmul_matches_numpy(m, k, n):
    # (9, 256, 1000) and larger are split with XLA's pool threads (M·K·N >= 65536); the others run inline.
    rng = np.random.default_rng(m * 1000 + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    y = np.asarray(jax.jit(lambda x, w: cpu_gemv.matmul(x, cpu_gemv.pack(w)))(x, w))
    ref = x.astype(np.float64) @ w.astype(np.float64)
    assert y.shape == (m, n) and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6 * np.sqrt(k) * np.abs(ref).max())


def test_matmul_keeps_leading_axes_and_checks_features():
    x = jnp.ones((2, 3, 16))
    w = cpu_gemv.pack(jnp.ones((16, 40)))
    assert cpu_gemv.matmul(x, w).shape == (2, 3, 40)
    np.testing.assert_allclose(cpu_gemv.matmul(x, w), 16.0)
    with pytest.raises(ValueError, match="features"):
        cpu_gemv.matmul(jnp.ones((2, 15)), w)


def test_repeated_calls_in_a_loop_stay_correct():
    # The decode loop calls the kernel many times in a row from XLA's threads (pool hand-offs).
    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 512)).astype(np.float32) / 16
    x = rng.standard_normal((8, 256)).astype(np.float32)
    packed = cpu_gemv.pack(jnp.asarray(w))

    def body(_, x):
        return jnp.tanh(cpu_gemv.matmul(x, packed)[:, :256])

    got = jax.jit(lambda x: jax.lax.fori_loop(0, 50, body, x))(x)
    want = x.astype(np.float64)
    for _ in range(50):
        want = np.tanh((want @ w)[:, :256])
    np.testing.assert_allclose(got, want, atol=1e-4)


def _decoder_case(d, f, heads, kv_heads, head_dim, prompts, share, t, s, layers=2, seed=0):
    """A random TextModel (biases and norm weights too), a decode token per row, the prompts' caches
    (prompt 1 left padded) and the rows' own caches, as the sampler holds them."""
    cfg = TextConfig(vocab_size=50, hidden_size=d, intermediate_size=f, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                     mrope_section=(head_dim // 2 - 2 * (head_dim // 6), head_dim // 6, head_dim // 6))
    model = nnx.eval_shape(lambda: TextModel(cfg, rngs=nnx.Rngs(seed)))  # shapes only: filled below (fast)
    rng = np.random.default_rng(seed)
    std = lambda a: a.shape[-2] ** -0.5 if a.ndim == 3 else 0.3  # noqa: E731  (matrices [L, K, N]; biases, norms)
    nnx.update(model, jax.tree.map(lambda a: jnp.asarray(std(a) * rng.standard_normal(a.shape), a.dtype),
                                   nnx.state(model, nnx.Param)))
    rows = prompts * share
    x = rng.standard_normal((rows, d)).astype(np.float32)
    pos = np.broadcast_to(rng.integers(t, 3 * t, rows)[None], (3, rows))
    cos, sin = mrope_cos_sin(jnp.asarray(pos)[:, :, None], head_dim, cfg.rope_theta, cfg.mrope_section)
    prompt_kv = rng.standard_normal((2, layers, prompts, t, kv_heads, head_dim)).astype(np.float32)
    own_kv = rng.standard_normal((2, layers, rows, s, kv_heads, head_dim)).astype(np.float32)
    valid = np.ones((prompts, t), bool)
    valid[1 % prompts, :2] = False
    return model, x, cos[:, 0], sin[:, 0], prompt_kv, own_kv, valid


@pytest.mark.parametrize("d,f,heads,kv_heads,head_dim,prompts,share,t,s,step", [
    (32, 48, 4, 2, 16, 3, 1, 5, 6, 0),  # a candidate per prompt, first decode step
    (24, 40, 4, 2, 6, 2, 3, 9, 7, 4),  # 3 candidates share each prompt; head_dim not a multiple of 16
    (256, 512, 8, 2, 32, 3, 3, 40, 20, 19),  # 9 rows (a partial block of 8); split over the pool; last step
], ids=["G=1 step 0", "G=3 head_dim 6", "9 rows, pool, last step"])
def test_decoder_layers_equal_the_model(d, f, heads, kv_heads, head_dim, prompts, share, t, s, step):
    model, x, cos, sin, prompt_kv, own_kv, valid = _decoder_case(d, f, heads, kv_heads, head_dim, prompts, share,
                                                                 t, s)
    rows = prompts * share
    kv_valid = np.arange(s)[None].repeat(rows, 0) <= step

    @jax.jit
    def xla(x, cos, sin, prompt_kv, own_kv):  # the model's own layers: shared_prefix_attention over the caches
        h, cache = model(x[:, None], cos[:, None], sin[:, None], causal_mask(kv_valid, jnp.full((rows, 1), step)),
                         {"k": own_kv[0], "v": own_kv[1]}, step, prompt_cache=(prompt_kv[0], prompt_kv[1], valid))
        return h[:, 0], cache

    @jax.jit
    def fused(x, cos, sin, prompt_kv, own_kv):
        layers = cpu_decode.unstack(model, cpu_decode.pack_layers(model))
        heads_major = lambda a: tuple(jnp.swapaxes(a[i], 1, 2) for i in range(a.shape[0]))  # noqa: E731
        h, cache = cpu_decode.decode_token(model, x, cos, sin, layers, (heads_major(prompt_kv[0]),
                                                                        heads_major(prompt_kv[1]), valid),
                                           {"k": heads_major(own_kv[0]), "v": heads_major(own_kv[1])}, step)
        return h, {k: jnp.stack([jnp.swapaxes(a, 1, 2) for a in v]) for k, v in cache.items()}

    assert "omni_jax_decoder_layer_f32" in fused.lower(x, cos, sin, prompt_kv, own_kv).as_text()
    want_h, want_cache = xla(x, cos, sin, prompt_kv, own_kv)
    got_h, got_cache = fused(x, cos, sin, prompt_kv, own_kv)
    scale = float(jnp.abs(want_h).max())
    np.testing.assert_allclose(got_h, want_h, rtol=0, atol=2e-5 * scale)
    for k in ("k", "v"):  # this token written at `step` (after rotary for k), the rest untouched
        np.testing.assert_allclose(got_cache[k], want_cache[k], rtol=0, atol=2e-5 * float(jnp.abs(want_cache[k]).max()))
        assert not np.allclose(np.asarray(got_cache[k])[:, :, step], own_kv[0 if k == "k" else 1][:, :, step])


def test_decoder_layer_rejects_what_does_not_fit():
    model, x, cos, sin, prompt_kv, own_kv, valid = _decoder_case(32, 48, 4, 2, 16, 2, 1, 5, 6)
    graphdef, states = cpu_decode.unstack(model, cpu_decode.pack_layers(model))
    layer = nnx.merge(graphdef, states[0])
    att, mlp = layer.self_attn, layer.mlp
    hm = lambda a: jnp.swapaxes(jnp.asarray(a[0]), 1, 2)  # noqa: E731
    kw = dict(input_norm=layer.input_layernorm.weight[...], q=(att.q_proj.kernel.get_value(), att.q_proj.bias[...]),
              k=(att.k_proj.kernel.get_value(), att.k_proj.bias[...]),
              v=(att.v_proj.kernel.get_value(), att.v_proj.bias[...]), o=att.o_proj.kernel.get_value(),
              post_norm=layer.post_attention_layernorm.weight[...], gate=mlp.gate_proj.kernel.get_value(),
              up=mlp.up_proj.kernel.get_value(), down=mlp.down_proj.kernel.get_value(),
              prompt=(hm(prompt_kv[0]), hm(prompt_kv[1]), valid), cache=(hm(own_kv[0]), hm(own_kv[1])), eps=1e-6)
    out = cpu_gemv.decoder_layer(x, cos, sin, step=jnp.int32(5), **kw)
    assert out[0].shape == x.shape and out[1].shape == (2, 2, 16)
    with pytest.raises(Exception, match="step outside the cache"):  # the cache holds positions 0..5
        jax.block_until_ready(cpu_gemv.decoder_layer(x, cos, sin, step=jnp.int32(6), **kw))
    with pytest.raises(ValueError, match="different layers"):
        cpu_gemv.decoder_layer(x, cos, sin, step=0, **dict(kw, o=kw["o"].at_layer(1)))
    with pytest.raises(ValueError, match="do not fit"):
        cpu_gemv.decoder_layer(x[:1], cos[:1], sin[:1], step=0, **kw)


BUILD_FAILS = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import jax, numpy as np
    from omni_jax.kernels import cpu_gemv
    assert not cpu_gemv.available()
    assert "failed" in cpu_gemv.build_error(), cpu_gemv.build_error()
    assert not cpu_gemv.usable(jax.devices()[:1], "float32")
    print("OK")
""")


def test_a_compiler_failure_leaves_xla_in_place(tmp_path):
    env = dict(os.environ, CXX="false", OMNI_JAX_KERNEL_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", BUILD_FAILS.format(root=ROOT)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-written left behind


BUILDS_ONCE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import jax, numpy as np
    from omni_jax.kernels import cpu_gemv
    assert cpu_gemv.available(), cpu_gemv.build_error()
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((9, 300)).astype(np.float32), rng.standard_normal((300, 1000)).astype(np.float32)
    y = jax.jit(lambda x, w: cpu_gemv.matmul(x, cpu_gemv.pack(w)))(x, w)
    assert np.abs(np.asarray(y) - x.astype(np.float64) @ w).max() < 1e-3
    print(cpu_gemv._library_path()[0])
""")


def test_library_is_built_once_into_the_cache(tmp_path):
    env = dict(os.environ, OMNI_JAX_KERNEL_CACHE=str(tmp_path), JAX_PLATFORMS="cpu")
    run = lambda: subprocess.run([sys.executable, "-c", BUILDS_ONCE.format(root=ROOT)], env=env,  # noqa: E731
                                 capture_output=True, text=True, timeout=300)
    first = run()
    assert first.returncode == 0, first.stderr[-3000:]
    lib = first.stdout.strip().splitlines()[-1]
    built = os.path.getmtime(lib)
    second = run()
    assert second.returncode == 0 and second.stdout.strip().splitlines()[-1] == lib
    assert os.path.getmtime(lib) == built
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(lib)]


def test_usable_only_for_float32_on_one_cpu_device(monkeypatch):
    monkeypatch.setattr(cpu_gemv, "faster_than_xla", lambda: True)
    cpu = jax.devices("cpu")[0]
    assert cpu_gemv.usable([cpu], "float32")
    assert not cpu_gemv.usable([cpu], jnp.bfloat16)
    assert not cpu_gemv.usable([cpu, cpu], "float32")  # a mesh of several devices: XLA shards the dot
    assert "one CPU device" in cpu_gemv.why_not([cpu, cpu]) and cpu_gemv.why_not([cpu]) is None
    monkeypatch.setenv("OMNI_JAX_CPU_GEMV", "0")
    assert not cpu_gemv.usable([cpu], "float32")


def _fresh_calibration(monkeypatch, cache, timings):
    """Calibrate into `cache` (a new build key's file there) with `_time_products` returning `timings`
    (or raising, for None), forgetting this process's decision first."""
    monkeypatch.setenv("OMNI_JAX_KERNEL_CACHE", str(cache))
    monkeypatch.delenv("OMNI_JAX_CPU_GEMV", raising=False)
    monkeypatch.delitem(cpu_gemv._state, "calibration", raising=False)

    def timed(*_):
        if timings is None:
            raise AssertionError("calibrated again instead of reading the cached decision")
        return timings

    monkeypatch.setattr(cpu_gemv, "_time_products", timed)


def test_calibration_falls_back_to_xla_where_the_kernel_is_slower_and_is_cached(tmp_path, monkeypatch):
    cpu = [jax.devices("cpu")[0]]
    _fresh_calibration(monkeypatch, tmp_path, (0.004, 0.001))  # a CPU where the kernel is 4x slower
    assert not cpu_gemv.usable(cpu, "float32")
    saved = json.loads(cpu_gemv._calibration_path().read_text())
    assert cpu_gemv._calibration_path().parent == tmp_path
    assert saved["faster"] is False and saved["kernel_s"] == 0.004 and saved["xla_s"] == 0.001
    _fresh_calibration(monkeypatch, tmp_path, None)  # a new process: reads the decision, times nothing
    assert not cpu_gemv.usable(cpu, "float32")
    monkeypatch.setenv("OMNI_JAX_CPU_GEMV", "1")  # forced on
    assert cpu_gemv.usable(cpu, "float32")
    _fresh_calibration(monkeypatch, tmp_path / "other", (0.001, 0.004))  # a CPU where it is faster
    assert cpu_gemv.usable(cpu, "float32")
    assert json.loads(cpu_gemv._calibration_path().read_text())["faster"] is True


def test_a_calibration_others_can_write_is_measured_again(tmp_path, monkeypatch):
    cpu = [jax.devices("cpu")[0]]
    _fresh_calibration(monkeypatch, tmp_path, (0.004, 0.001))  # the kernel is slower on this CPU
    path = cpu_gemv._calibration_path()
    path.write_text(json.dumps({"faster": True}))  # a planted decision, writable by everyone
    path.chmod(0o666)
    assert not cpu_gemv.usable(cpu, "float32")
    assert json.loads(path.read_text())["faster"] is False and path.stat().st_mode & 0o077 == 0
    _fresh_calibration(monkeypatch, tmp_path, None)  # the file it wrote instead is read back
    assert not cpu_gemv.usable(cpu, "float32")


def test_calibration_times_both_systems():
    kernel_s, xla_s = cpu_gemv._time_products(repeats=2)
    assert 0 < kernel_s < 1 and 0 < xla_s < 1


AVX2_BUILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from omni_jax.kernels import cpu_gemv
    assert cpu_gemv.available(), cpu_gemv.build_error()
    assert cpu_gemv.tile_shape() == (8, 2), cpu_gemv.tile_shape()
    from tests.kernels import test_cpu_gemv as t
    for case in [(3, 5, 31), (9, 64, 33), (9, 256, 1000), (64, 320, 640)]:
        t.test_matmul_matches_numpy(*case)
    t.test_decoder_layers_equal_the_model(24, 40, 4, 2, 6, 2, 3, 9, 7, 4)
    t.test_decoder_layers_equal_the_model(256, 512, 8, 2, 32, 3, 3, 40, 20, 19)
    print("OK")
""")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="needs an x86-64 CPU (an AVX2 build)")
def test_an_avx2_build_equals_xla(tmp_path):
    # The build an AVX2-only CPU (no AVX-512) gets, made here with -march=haswell: its own register
    # tile (8 floats a vector, 2 rows), the same products and decoder layer as XLA's ops.
    env = dict(os.environ, OMNI_JAX_KERNEL_CXXFLAGS="-march=haswell", OMNI_JAX_KERNEL_CACHE=str(tmp_path),
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", AVX2_BUILD.format(root=ROOT)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
