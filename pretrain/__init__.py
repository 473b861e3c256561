"""The DSPNet / BYOL pretraining engine (``python -m pretrain --config-file ...``)."""
