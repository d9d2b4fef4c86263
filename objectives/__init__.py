"""What one trial measures: data, per-fold preprocessing, the MLP, the losses, the training engine, the threshold.

Pure: this package imports neither Optuna nor MLflow, and nothing from ``search``.
"""
