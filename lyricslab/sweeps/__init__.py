"""Optuna sweeps over Hydra config groups: sweep files, search spaces, storage, workers on any number of hosts, MLflow parent runs."""

import warnings

import optuna

# We rely on two APIs Optuna still flags experimental (RetryFailedTrialCallback, TPE's `group`);
# the flag is a note for us, not for users reading sweep output.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
