"""Prefect flows, one per pipeline stage; `python -m pipelines STAGE` is the CLI each DVC stage runs."""
