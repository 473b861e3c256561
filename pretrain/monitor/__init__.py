"""Networks measured while and after they train: pooled features and accuracy, kNN, the online linear probe,
the kNN monitor of every DN, and the result tables and plots."""
