"""The command-line edge: the ``ecgvgg`` commands (:mod:`ecgvgg.cli.main`), their terminal output and exit
codes. It imports the core and the MLflow edge."""
