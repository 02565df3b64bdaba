"""The synthetic video questions (omni_jax.data.synthetic) written as a TFDS dataset."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from omni_jax.data import synthetic
from omni_jax.data.sources import common


class SyntheticConfig(tfds.core.BuilderConfig):
    def __init__(self, *, num_examples: int, seed: int = 0, **kwargs):
        super().__init__(version=common.VERSION, **kwargs)
        self.num_examples, self.seed = num_examples, seed


class Synthetic(tfds.core.GeneratorBasedBuilder):
    """Rendered stick-figure clips (uint8 frames, 4 fps) with a 16 kHz tone track and four-way
    questions about shirt colour, direction, head count, pitch or beeps. No manual_dir."""

    name = "omni_synthetic"
    VERSION = common.VERSION
    BUILDER_CONFIGS = [SyntheticConfig(name="default", num_examples=2048),
                       SyntheticConfig(name="small", num_examples=256)]

    def _info(self):
        text = tfds.features.Text()
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=tfds.features.FeaturesDict({
            "id": text, "source": text, "data_type": text,
            "video": tfds.features.Tensor(shape=(None, None, None, 3), dtype=np.uint8, encoding="zlib"),
            "video_fps": np.float32,
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.float32, encoding="zlib"),
            "problem": text, "problem_type": text, "options": tfds.features.Sequence(text),
            "solution": text, "answer": text,
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        cfg = self.builder_config
        for i in range(cfg.num_examples):
            rec = synthetic.make_record(i, cfg.seed)
            rec.pop("image")
            yield rec["id"], rec
