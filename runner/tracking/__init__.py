"""Everything MLflow: which store (store.py), the experiment (experiments.py), one run's
lifecycle and honest end status (run.py), what a run logs (run_log.py), delivery to a tracking
server that may go away (delivery.py, outbox.py), and the logged models (logged_model.py,
serving_model.py)."""
