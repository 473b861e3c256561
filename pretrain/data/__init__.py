"""Pretraining data: the resumable per-image-seeded sampler, BYOL's two views (fast and reference
augmentations) and the two-view dataset."""
