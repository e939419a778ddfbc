"""Batched augmentation and the classifier training loop."""
