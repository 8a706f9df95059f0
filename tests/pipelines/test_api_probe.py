"""API coverage probes against the live server: what is built counts, what is not (fine-tunes) does not."""

from __future__ import annotations

import pytest

from pipelines.api_probe import ENDPOINTS, OPTIONAL, probe

pytestmark = pytest.mark.integration


def test_probe_counts_endpoints_and_parameters(live) -> None:
    result = probe(live.url, "smollm2-135m-instruct")
    api = result["api"]
    assert api["endpoints"]["/v1/fine-tunes"] == 0 and api["endpoints"]["/v1/chat/completions"] == 1
    # Part 5.1's required endpoints only: embeddings is optional there and reported beside, built or not
    assert api["endpoint_coverage_pct"] == pytest.approx(100 * 5 / (len(ENDPOINTS) - len(OPTIONAL)))
    assert api["optional_endpoints"] == {"/v1/embeddings": 1} and "/v1/embeddings" not in api["endpoints"]
    assert api["parameter_support_pct"] == 100.0, api["parameters"]
