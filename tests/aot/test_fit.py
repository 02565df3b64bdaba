"""The fit check end to end on a tiny config, compiled for real TPU slices with libtpu (no TPU needed):
the library report, the CLI's JSON, a config that cannot fit, and XLA's out-of-memory messages."""

import json
import pathlib
import subprocess
import sys

import pytest

from omni_jax.aot import fit as F
from omni_jax.aot.inputs import Prompt
from omni_jax.aot.topology import libtpu_available
from tests.aot.conftest import optimized_env

ROOT = pathlib.Path(__file__).resolve().parents[2]
needs_libtpu = pytest.mark.skipif(not libtpu_available(), reason="libtpu not installed: pip install -r "
                                  "requirements-test.txt (it carries the jax[tpu] libtpu pin)")
TINY_PROMPT = Prompt(video_grid=(2, 2, 4), audio_frames=200, text_tokens=40)


def _tiny_config():
    from tests.aot.test_inputs import _stage4

    return _stage4("runlocal")


@pytest.fixture(scope="module")
def tiny_report():
    return F.check_fit(_tiny_config(), "v5e-4", prompt=TINY_PROMPT)


@needs_libtpu
def test_tiny_config_fits_a_small_slice(tiny_report):
    r = tiny_report
    assert r.chips == 4 and r.mesh == {"data": 1, "fsdp": 4, "tp": 1}
    assert [s.name for s in r.steps] == ["prefill", "decode", "train", "reference"]
    assert r.fits and all(s.fits for s in r.steps)
    for s in r.steps:
        assert 0 < s.bytes_per_chip < s.hbm_bytes_per_chip == 16 * 2**30
        assert s.flops > 0 and s.roofline_seconds > 0
        # The compiled buffers agree with the arithmetic by hand (small replicated norms aside).
        assert s.params == pytest.approx(s.estimate["params"], rel=0.05)
        assert s.optimizer == pytest.approx(s.estimate["optimizer"], rel=0.05)
        # Activations (arguments other than the resident state, and outputs) near the hand count:
        # at this tiny size small replicated pieces make them 10-35 % larger, while counting the
        # parameters among them (a wrong resident-argument index) would add all the params' bytes.
        assert abs(s.activations - s.estimate["activations"]) < 0.5 * s.params, s.name
    steps = {s.name: s for s in r.steps}
    # One train step runs forward, remat and backward over every row: it costs more than the prefill.
    assert steps["train"].flops > steps["prefill"].flops
    json.dumps(r.to_json())


@needs_libtpu
def test_a_config_over_hbm_reports_no_fit():
    r = F.check_fit(_tiny_config(), "v5e-4", prompt=TINY_PROMPT, steps=("reference",), hbm_bytes=2**20)
    (step,) = r.steps
    assert step.bytes_per_chip > 2**20 and not step.fits and not r.fits


@needs_libtpu
def test_cli_json_has_the_fields():
    cmd = [sys.executable, "-m", "omni_jax.aot", "--config", "configs/stage4_people_focus.py:runlocal",
           "--topology", "v5p-8", "--json", "--steps", "decode", "--audio_seconds", "2", "--text_tokens", "40"]
    proc = subprocess.run(cmd, cwd=ROOT, env=optimized_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)  # exactly one JSON object on stdout; progress goes to stderr
    assert out["topology"] == "v5p-8"
    # One step, the quickest to compile; all four: test_tiny_config_fits_a_small_slice.
    assert [s["name"] for s in out["steps"]] == ["decode"]
    for s in out["steps"]:
        assert isinstance(s["bytes_per_chip"], int) and s["bytes_per_chip"] > 0
        assert s["hbm_bytes_per_chip"] == 95 * 2**30 and s["fits"] is True and s["flops"] > 0


def test_out_of_memory_message_gives_the_bytes_asked_for():
    msg = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
           "(147.36G) exceeds available HBM (95.74G).")
    assert F._required_bytes(msg) == int(147.36 * 2**30)
    assert F._required_bytes("XLA:TPU compile permanent error. Used 215.17G of 31.25G hbm.") == int(215.17 * 2**30)
    assert F._required_bytes("something else") == 0


def test_a_step_that_did_not_compile_never_fits():
    step = F.StepReport(name="train", params=1, optimizer=1, activations=1, temporaries=1, code=0,
                        hbm_bytes_per_chip=2**40, flops=1.0, compute_seconds=1.0, memory_seconds=1.0, estimate={},
                        xla={}, compile_seconds=1.0, error="RESOURCE_EXHAUSTED: ...")
    assert not step.fits and step.to_json()["fits"] is False and "error" in step.to_json()


def test_the_fit_check_lowers_the_rollout_steps_generate_builds(monkeypatch):
    """The prefill and decode the fit check compiles come from `build_rollout_steps`, as `generate`'s
    do: the same jitted functions, on the argument tuples it makes, static where it says."""
    import jax

    from omni_jax.rollout import sampler

    built, compiled = [], []
    real_build = sampler.build_rollout_steps
    monkeypatch.setattr(sampler, "build_rollout_steps", lambda *a, **k: built.append(real_build(*a, **k)) or built[-1])

    class Stop(Exception):
        pass

    def trace_only(jitted, args, *, layout, static=(), while_trips=1):
        compiled.append((jitted, args, static))
        if len(compiled) == 2:
            raise Stop
        with layout.activate():
            traced = jitted.trace(*args)
        return F._Compiled(traced, None, 0.0, 0.0, [0] * len(args), "traced only")

    monkeypatch.setattr(F, "_compile", trace_only)
    with pytest.raises(Stop):
        F.check_fit(_tiny_config(), "v5e-4", prompt=TINY_PROMPT, steps=("prefill", "decode"),
                    devices=jax.devices()[:1])
    (steps,) = built
    (pre_fn, pre_args, pre_static), (dec_fn, dec_args, dec_static) = compiled
    assert pre_fn is sampler._prefill and dec_fn is sampler._decode
    assert (pre_static, dec_static) == (sampler.PREFILL_STATIC, sampler.DECODE_STATIC)
    want_pre = steps.prefill_args(pre_args[1], pre_args[2])
    assert [pre_args[i] for i in pre_static] == [want_pre[i] for i in pre_static]
    assert [dec_args[i] for i in dec_static] == [steps.decode_args(None, None, (None,) * 5, None, None)[i]
                                                 for i in dec_static]
    assert dec_args[dec_static[1]] == steps.sampling and dec_args[dec_static[2]] == steps.max_new_tokens
