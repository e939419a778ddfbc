"""CLIP models: an open_clip factory with local-only weights, zero-shot scoring and pretraining."""
