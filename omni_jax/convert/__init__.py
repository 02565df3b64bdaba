"""HF ↔ Orbax checkpoint conversion: the CLI and the two directions (the tables live in `omni_jax.weights`)."""
