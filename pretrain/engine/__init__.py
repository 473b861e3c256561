"""The training engine: the loop every trainer shares (resume, checkpoints, stop signals, records), the
pretraining trainer, its optimiser and schedules, process groups, Slurm submission and metric logging."""
