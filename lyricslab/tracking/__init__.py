"""MLflow: runs that never stay RUNNING, the model bundle, the tracking server check, plots, the leaderboard."""
