"""The omni_jax version (checkpoints record it); `omni_jax.__version__` is this one."""

__version__ = "0.1.0"
