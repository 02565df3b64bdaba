"""EMER (explainable multimodal emotion recognition), HumanOmniV2's emer_ov_mc questions, as TFDS."""

from __future__ import annotations

from omni_jax.data.sources import common


class Emer(common.ManualBuilder):
    """EMER in HumanOmniV2's format: problem_type "emer_ov_mc" (one or more option letters, F1).

    manual_dir:
        *.json / *.jsonl at the top   HumanOmniV2 rows: problem, problem_type ("emer_ov_mc"),
                                      options ["A. Urgent", ...], solution
                                      ("<context>..</context><think>..</think><answer>B,C</answer>"),
                                      answer ("B,C"), data_type "video", path
        <path> relative to manual_dir, e.g. MER24/sample_00000000.mp4
    """

    name = "omni_emer"
    SOURCE = "emer"

    def _rows(self, root, split):
        yield from common.humanomni_rows(root, self.SOURCE)
