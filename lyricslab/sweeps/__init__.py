"""Optuna sweeps over Hydra config groups (search spaces, storage, MLflow parent runs)."""
