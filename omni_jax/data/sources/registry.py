"""Source names -> how to open them: a prepared TFDS dataset (`TfdsSource`), a HumanOmniV2 json
manifest (`common.JsonSource`) or the in-memory synthetic generator; `open_source` picks one."""

from __future__ import annotations

import functools
import os

from omni_jax.data import synthetic
from omni_jax.data.errors import DataError
from omni_jax.data.sources import media_value


@functools.lru_cache(maxsize=1)
def builders() -> dict:
    """Source name -> TFDS builder class (importing the modules registers them with TFDS)."""
    # Deferred: the builder modules import tensorflow_datasets (TensorFlow, seconds to import),
    # needed only for prepared TFDS datasets, not for manifests or synthetic data.
    from omni_jax.data.sources import emer, intentbench, social_iq2, video_r1
    from omni_jax.data.sources import synthetic as synthetic_tfds

    return {
        "social_iq2": social_iq2.SocialIq2,
        "emer": emer.Emer,
        "video_r1": video_r1.VideoR1,
        "intentbench": intentbench.IntentBench,
        "synthetic_tfds": synthetic_tfds.Synthetic,
    }


class TfdsSource:
    """A prepared TFDS dataset (array_record) with random access; TFDS bytes become schema values."""

    def __init__(self, name: str, builder_name: str, data_dir: str | None, split: str = "train", config=None):
        # Deferred: tensorflow_datasets imports TensorFlow (seconds), needed only for prepared datasets.
        import tensorflow_datasets as tfds

        builders()  # registers the builder classes with TFDS
        full = builder_name if config is None else f"{builder_name}/{config}"
        try:
            builder = tfds.builder(full, data_dir=data_dir or None, file_format="array_record")
            self._ds = builder.as_data_source(split=split)
        except Exception as e:
            raise DataError(f"source {name!r}: cannot open the prepared TFDS dataset {full!r} in "
                            f"{data_dir or 'the TFDS default data_dir'} ({e}); build it first with "
                            f"`python -m omni_jax.data.build {builder_name} --manual_dir ...`") from e
        self.name = name

    def __len__(self):
        return len(self._ds)

    def __getitem__(self, i):
        ex = dict(self._ds[i])
        for field in ("video", "audio"):  # by_path records: a path string, never bytes of a file
            path = ex.pop(f"{field}_path", None)
            if path and not media_value(ex.get(field)):
                ex[field] = path.decode("utf-8") if isinstance(path, bytes) else path
        ex["options"] = list(ex.get("options", []))
        return ex


def open_source(name: str, cfg):
    """A source by name: "synthetic" is generated in memory; a source with cfg.manifests[name] set
    reads that HumanOmniV2 json at run time; others read a prepared TFDS dataset from
    cfg.data_dir with the builder config cfg.tfds_configs[name] and split cfg.split."""
    if name == "synthetic":
        s = cfg.synthetic
        return synthetic.SyntheticSource(s.num_examples, s.seed, size=s.size, num_frames=s.num_frames, fps=s.fps)
    manifest = dict(cfg.manifests).get(name)
    if manifest:
        # Deferred: common imports tensorflow_datasets (TensorFlow, seconds to import).
        from omni_jax.data.sources.common import JsonSource

        root = dict(cfg.manifest_roots).get(name) or os.path.dirname(os.path.abspath(manifest))
        return JsonSource(name, manifest, root)
    table = builders()
    if name not in table:
        raise DataError(f"unknown source {name!r}; known: {sorted(table) + ['synthetic']}")
    configs = dict(cfg.tfds_configs)
    split = "test" if name == "intentbench" else cfg.split
    return TfdsSource(name, table[name].name, cfg.data_dir, split=split, config=configs.get(name))
