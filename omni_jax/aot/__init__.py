"""Will it fit? Deviceless AOT compilation of the run's own steps for a Cloud TPU slice.

    from omni_jax.aot import check_fit
    report = check_fit(config, "v5p-8")      # needs libtpu (the jax[tpu] extra), not a TPU
    report.fits, [(s.name, s.bytes_per_chip, s.flops) for s in report.steps]

CLI: `python -m omni_jax.aot --config configs/stage4_people_focus.py:model=7b --topology v5p-8`.
"""

from omni_jax.aot.fit import STEPS, FitReport, StepReport, check_fit
from omni_jax.aot.inputs import Prompt, worst_case_prompt
from omni_jax.aot.topology import SLICES, get_slice, libtpu_available

__all__ = ["STEPS", "FitReport", "StepReport", "check_fit", "Prompt", "worst_case_prompt", "SLICES", "get_slice",
           "libtpu_available"]
