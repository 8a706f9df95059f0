"""The process set-up every pipeline entry point makes before any library loads: no telemetry, no hub downloads.

Why before: huggingface_hub reads HF_HUB_OFFLINE, MLflow its telemetry switch and Prefect all its settings once,
at import. `python -m pipelines COMMAND` calls `configure()` first; tests/conftest.py applies `SWITCHES` itself.
The Makefile and `.ci/run` export the same switches for the tools they start (pip, dvc, pytest).
"""

import os

SWITCHES = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # A stage logs its own progress; Prefect's per-task INFO lines would bury it.
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # Prefect's ephemeral API needs longer than its 20 s default to start on a busy 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def configure() -> None:
    """Set the switches in this process (and so in the subprocesses it starts); a value the user set wins."""
    for key, value in SWITCHES.items():
        os.environ.setdefault(key, value)
