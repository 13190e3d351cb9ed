"""Training, evaluation and CK+ k-fold commands (fer-train, fer-eval, fer-kfold)."""
