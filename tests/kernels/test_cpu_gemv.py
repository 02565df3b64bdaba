"""omni_jax.kernels.cpu_gemv: the CPU decode kernel (an XLA FFI custom call built with g++ on first use)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_jax.kernels import cpu_gemv
from omni_jax.model.layers import Dense, GatedMLP, pack_kernels

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_kernel_builds_here():
    # CI machines and these dev machines have g++: the kernel must build (not silently fall back).
    assert cpu_gemv.available(), cpu_gemv.build_error()
    assert cpu_gemv.threads() >= 1


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
    # (9, 256, 1000) and larger go through the thread pool (K·N >= 65536); the others run inline.
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


@pytest.mark.parametrize("layer", ["dense with bias", "dense", "gated mlp"])
def test_packed_layers_equal_xla(layer):
    rngs = nnx.Rngs(0)
    if layer == "gated mlp":
        mod = GatedMLP(64, 96, ("embed", "mlp"), bias=False, act="silu", rngs=rngs, dtype=jnp.float32,
                       param_dtype=jnp.float32)
    else:
        mod = Dense(640, 200, ("embed", "mlp"), bias=layer == "dense with bias", rngs=rngs)
        if mod.bias is not None:
            mod.bias[...] = jnp.linspace(-1, 1, 200)
    graphdef, state = nnx.split(mod)
    x = jax.random.normal(jax.random.key(1), (3, 2, 64 if layer == "gated mlp" else 640))

    def both(state, x):
        return nnx.merge(graphdef, state)(x), nnx.merge(graphdef, pack_kernels(state))(x)

    assert "omni_jax_packed_gemv_f32" in str(jax.jit(both).lower(state, x).as_text())  # the kernel runs
    a, b = jax.jit(both)(state, x)
    np.testing.assert_allclose(b, a, atol=1e-5 * float(jnp.abs(a).max()))


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
    assert cpu_gemv.threads() == 3  # $OMNI_JAX_GEMV_THREADS, more threads than this machine's cores
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((9, 300)).astype(np.float32), rng.standard_normal((300, 1000)).astype(np.float32)
    y = jax.jit(lambda x, w: cpu_gemv.matmul(x, cpu_gemv.pack(w)))(x, w)
    assert np.abs(np.asarray(y) - x.astype(np.float64) @ w).max() < 1e-3
    print(cpu_gemv._library_path()[0])
""")


def test_library_is_built_once_into_the_cache(tmp_path):
    env = dict(os.environ, OMNI_JAX_KERNEL_CACHE=str(tmp_path), JAX_PLATFORMS="cpu", OMNI_JAX_GEMV_THREADS="3")
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
    cpu = jax.devices("cpu")[0]
    assert cpu_gemv.usable([cpu], "float32")
    assert not cpu_gemv.usable([cpu], jnp.bfloat16)
    assert not cpu_gemv.usable([cpu, cpu], "float32")  # a mesh of several devices: XLA shards the dot
    assert "one CPU device" in cpu_gemv.why_not([cpu, cpu]) and cpu_gemv.why_not([cpu]) is None
    monkeypatch.setenv("OMNI_JAX_CPU_GEMV", "0")
    assert not cpu_gemv.usable([cpu], "float32")
