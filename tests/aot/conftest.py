"""The fit check's numbers are a production compile's: XLA's optimizations on for these tests (the
suite's conftest turns most of them off elsewhere, to compile faster)."""

import os

import pytest


@pytest.fixture(autouse=True, scope="module")
def xla_optimizations_on():
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


def optimized_env() -> dict:
    """The environment for a subprocess that compiles as production does."""
    return dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="0")
