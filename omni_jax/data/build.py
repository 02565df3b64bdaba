"""Prepare a dataset once: `python -m omni_jax.data.build SOURCE --manual_dir D [--data_dir O]`.

SOURCE is social_iq2, emer, video_r1, intentbench or synthetic_tfds; --config picks the builder
config (embedded | by_path | sample for video_r1). The result is array_record files that
`omni_jax.data.sources.registry.TfdsSource` (and so the mixture) reads with random access.
"""

from __future__ import annotations

import argparse
import re
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


def sources_help() -> str:
    """One line per source this command builds: its name, what it is, its builder configs."""
    from omni_jax.data.sources import registry

    lines = []
    for name, builder in sorted(registry.builders().items()):
        paragraph = " ".join((builder.__doc__ or "").strip().split("\n\n")[0].split())
        doc = re.split(r"(?<=[a-z0-9)\"])\.\s", paragraph)[0].rstrip(".") + "."
        configs = ", ".join(c.name for c in getattr(builder, "BUILDER_CONFIGS", []) or [])
        lines.append(f"  {name:<15} {doc}" + (f" (--config {configs})" if configs else ""))
    return "sources:\n" + "\n".join(lines)


def main(argv=None):
    from omni_jax.data.sources import registry

    parser = argparse.ArgumentParser(prog="python -m omni_jax.data.build", description=__doc__.splitlines()[0],
                                     epilog=sources_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", choices=sorted(registry.builders()), metavar="source",
                        help="the dataset to build (see sources below)")
    parser.add_argument("--manual_dir", default=None, help="the raw dataset (layout: the builder's docstring)")
    parser.add_argument("--data_dir", default=None, help="where prepared datasets live (TFDS data_dir)")
    parser.add_argument("--config", default=None, help="the builder config (below; default: the first)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    builder = build(args.source, args.manual_dir, args.data_dir, args.config)
    print(builder.info.splits)


if __name__ == "__main__":
    main()
