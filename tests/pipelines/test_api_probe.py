"""API coverage probes against a live server: what the server serves counts, what it does not (fine-tunes on a
server without a fine-tuning directory) does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.engine import EngineConfig
from engine.server.state import ServerConfig
from pipelines.api_probe import ENDPOINTS, OPTIONAL, probe
from tests.conftest import start_server

pytestmark = pytest.mark.integration


def test_probe_counts_endpoints_and_parameters(live) -> None:
    result = probe(live.url, "smollm2-135m-instruct")
    api = result["api"]
    assert api["endpoints"]["/v1/fine-tunes"] == 0 and api["endpoints"]["/v1/chat/completions"] == 1
    # Part 5.1's required endpoints only: embeddings is optional there and reported beside, built or not
    assert api["endpoint_coverage_pct"] == pytest.approx(100 * 5 / (len(ENDPOINTS) - len(OPTIONAL)))
    assert api["optional_endpoints"] == {"/v1/embeddings": 1} and "/v1/embeddings" not in api["endpoints"]
    assert api["parameter_support_pct"] == 100.0, api["parameters"]


def test_fine_tunes_count_when_the_server_fine_tunes_and_the_probe_trains_nothing(
    tiny_llama: Path, tmp_path: Path
) -> None:
    config = ServerConfig(models=[str(tiny_llama)], engine=EngineConfig(kv_cache_bytes=32 * 2**20),
                          fine_tuning_dir=str(tmp_path))  # fmt: skip
    server = start_server(config)
    try:
        api = probe(server.url, tiny_llama.name)["api"]
        jobs = server.app.state.jobs
    finally:
        server.stop()
    assert api["endpoints"]["/v1/fine-tunes"] == api["endpoints"]["/v1/fine-tunes/:id"] == 1
    assert api["endpoint_coverage_pct"] == 100.0, api["endpoints"]
    assert not jobs.jobs_in("queued", "running", "succeeded")  # the probe's jobs fail validation: nothing trains
