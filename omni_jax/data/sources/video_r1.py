"""A sample of Video-R1 (general video/image reasoning: the recipe's 20 % "no forgetting" share)."""

from __future__ import annotations

from omni_jax.data.sources import common


class VideoR1(common.ManualBuilder):
    """Video-R1 in HumanOmniV2's format (Video-R1_rewrite): multiple choice, numerical, OCR,
    free-form and regression questions on videos and images.

    manual_dir:
        *.json / *.jsonl at the top   rows: problem, problem_type, options, solution, data_type
                                      ("video" | "image"), path (or {"image": .., "audio": ..})
        <path> relative to manual_dir
    Configs: "embedded" / "by_path" keep every row; "sample" keeps a seeded random 6,000
    (media embedded), the size of the recipe's 20 % next to Social-IQ and EMER's ~3k + 150 rows
    over a few epochs of those.
    """

    name = "omni_video_r1"
    SOURCE = "video_r1"
    BUILDER_CONFIGS = common.MEDIA_CONFIGS + [
        common.MediaConfig(name="sample", description="seeded random 6,000 rows", embed=True, max_examples=6000),
    ]

    def _rows(self, root, split):
        yield from common.humanomni_rows(root, self.SOURCE)
