"""Prepare a dataset once: `python -m omni_jax.data.build SOURCE --manual_dir D [--data_dir O]`.

SOURCE is social_iq2, emer, video_r1, intentbench or synthetic_tfds; --config picks the builder
config (embedded | by_path | sample for video_r1). The result is array_record files that
`omni_jax.data.sources.registry.TfdsSource` (and so the mixture) reads with random access.
"""

from __future__ import annotations

import argparse
import logging

from omni_jax.data.errors import DataError
from omni_jax.data.sources import registry


def build(source: str, manual_dir: str | None, data_dir: str | None, config: str | None = None):
    """Build SOURCE into data_dir; returns the TFDS builder."""
    # Deferred: tensorflow_datasets imports TensorFlow (seconds), needed only when building.
    import tensorflow_datasets as tfds

    table = registry.builders()
    if source not in table:
        raise DataError(f"unknown source {source!r}; known: {sorted(table)}")
    builder = table[source](config=config, data_dir=data_dir or None, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--manual_dir", default=None, help="the raw dataset (layout: the builder's docstring)")
    parser.add_argument("--data_dir", default=None, help="where prepared datasets live (TFDS data_dir)")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    builder = build(args.source, args.manual_dir, args.data_dir, args.config)
    print(builder.info.splits)


if __name__ == "__main__":
    main()
