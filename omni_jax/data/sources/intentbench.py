"""IntentBench (the recipe's evaluation set) as a TFDS dataset."""

from __future__ import annotations

from omni_jax.data.sources import common


class IntentBench(common.ManualBuilder):
    """IntentBench: 2,689 questions over 633 videos (HF PhilipC/IntentBench: qa.json + videos.zip).

    manual_dir:
        qa.json        a JSON list: problem, problem_type ("multiple choice", "emer_ov_mc", ...),
                       options ("A.xxx" strings), solution ("<answer>..</answer>"), data_type,
                       video (a file name under videos/), Type, qid
        videos/<video>
    One split, "test". Evaluate with prompt_style "eval" (HumanOmniV2's eval script layout).
    """

    name = "omni_intentbench"
    SOURCE = "intentbench"
    SPLITS = ("test",)

    def _rows(self, root, split):
        yield from common.humanomni_rows(root, self.SOURCE, [root / "qa.json"], root / "videos")
