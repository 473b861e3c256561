"""Per-DN evaluation: linear, kNN and semi-supervised protocols (``python -m pretrain.eval``)."""
