"""GRPO: group advantages, the clipped-ratio policy loss with KL, and the train step."""
