"""`hydra/sweeper=optuna`: Hydra's sweeper interface over Optuna >= 4 (see `_impl.py`)."""
