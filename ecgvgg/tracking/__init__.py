"""The MLflow edge: runs opened and logged (:mod:`ecgvgg.tracking.log`), the run store, the pyfunc model,
past runs, and Optuna studies kept beside the store. It imports the core, never the command line."""
