"""Package list for setuptools (metadata is in pyproject.toml): every omni_jax package, and the
repository's configs/ shipped inside it as omni_jax.configs, so that `python -m omni_jax.train`
finds its default config from any directory after `pip install .`."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["omni_jax", "omni_jax.*"]), "omni_jax.configs"],
    package_dir={"omni_jax.configs": "configs"},
)
