"""HF ↔ Flax/Orbax checkpoint conversion (one mapping table for both directions)."""
