"""The core: tables, splits, resampling, networks, training and scores. It imports no MLflow, rich, Optuna or
Typer, and nothing from :mod:`ecgvgg.tracking` or :mod:`ecgvgg.cli`."""
