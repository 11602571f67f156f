"""Every command a user types: `python -m runner` (train.py) and `python -m runner.<command>`
(predict, evaluate, report, runs, preview, server, sync; each `runner/<command>.py` is a
two-line entry that calls its module here). What they share is in app.py.
"""

from runner.cli.app import prepare_environment

# Before any command imports TensorFlow or MLflow.
prepare_environment()
