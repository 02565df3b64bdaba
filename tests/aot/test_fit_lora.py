"""The fit check of a LoRA run: adapter-only optimizer state, no reference copy, the same steps compiled."""

import pytest

from omni_jax.aot import fit as F
from omni_jax.model import lora
from omni_jax.model.thinker import abstract_thinker
from tests.aot.test_fit import TINY_PROMPT, needs_libtpu


@needs_libtpu
def test_lora_run_compiles_with_adapter_optimizer_and_no_reference_copy():
    from tests.aot.test_inputs import _stage4

    config = _stage4("runlocal")
    with config.unlocked():
        config.lora.rank = 8
        config.grpo.beta = 0.04
    r = F.check_fit(config, "v5e-4", prompt=TINY_PROMPT, steps=("train", "reference"))
    assert [s.name for s in r.steps] == ["train", "reference"] and r.fits
    cfg = F._model_config(config)
    n_adapters = lora.count(lora.abstract_with_adapters(abstract_thinker(cfg), lora.config_from(config)))
    assert r.parameters["trainable"] == n_adapters  # the arithmetic by hand counts what the model holds
    train, ref = r.steps
    # AdamW moments (float32) of the adapters only: at most 2 × 4 bytes each per chip (fewer where sharded).
    assert 0 < train.optimizer <= 2 * 4 * n_adapters * 1.01
    assert train.optimizer <= train.estimate["optimizer"] * 1.01  # the estimate counts adapters unsharded
    # No reference copy: the resident parameters are the policy's (base + adapters) alone.
    assert ref.params == train.params
    assert ref.params == pytest.approx(ref.estimate["params"], rel=0.1)
