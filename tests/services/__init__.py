"""Real services that tests start and stop themselves: a single-node SLURM cluster, an MLflow tracking server."""
