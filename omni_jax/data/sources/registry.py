"""Source names -> how to open them (a TFDS builder, or the in-memory synthetic generator)."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def builders() -> dict:
    """Source name -> TFDS builder class (importing the modules registers them with TFDS)."""
    from omni_jax.data.sources import emer, intentbench, social_iq2, synthetic, video_r1

    return {
        "social_iq2": social_iq2.SocialIq2,
        "emer": emer.Emer,
        "video_r1": video_r1.VideoR1,
        "intentbench": intentbench.IntentBench,
        "synthetic_tfds": synthetic.Synthetic,
    }


def open_named(name: str, cfg):
    """A source by name: "synthetic" is generated in memory; a source with cfg.manifests[name] set
    reads that HumanOmniV2 json at run time; others read a prepared TFDS dataset from
    cfg.data_dir with the builder config cfg.tfds_configs[name] and split cfg.split."""
    import os

    from omni_jax.data.sources.common import JsonSource

    from omni_jax.data import synthetic
    from omni_jax.data.errors import DataError
    from omni_jax.data.sources import TfdsSource

    if name == "synthetic":
        s = cfg.synthetic
        return synthetic.SyntheticSource(s.num_examples, s.seed, size=s.size, num_frames=s.num_frames, fps=s.fps)
    manifest = dict(cfg.manifests).get(name)
    if manifest:
        root = dict(cfg.manifest_roots).get(name) or os.path.dirname(os.path.abspath(manifest))
        return JsonSource(name, manifest, root)
    table = builders()
    if name not in table:
        raise DataError(f"unknown source {name!r}; known: {sorted(table) + ['synthetic']}")
    configs = dict(cfg.tfds_configs)
    split = "test" if name == "intentbench" else cfg.split
    return TfdsSource(name, table[name].name, cfg.data_dir, split=split, config=configs.get(name))
