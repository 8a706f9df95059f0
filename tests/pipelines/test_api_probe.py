"""API coverage probes against the live server: what is built counts, what is not (fine-tunes) does not."""

from __future__ import annotations

import pytest

from pipelines.api_probe import ENDPOINTS, probe

pytestmark = pytest.mark.integration


def test_probe_counts_endpoints_and_parameters(live) -> None:
    result = probe(live.url, "smollm2-135m-instruct")
    api = result["api"]
    assert api["endpoints"]["/v1/fine-tunes"] == 0 and api["endpoints"]["/v1/chat/completions"] == 1
    assert api["endpoint_coverage_pct"] == pytest.approx(100 * 6 / len(ENDPOINTS))
    assert api["parameter_support_pct"] == 100.0, api["parameters"]
    assert result["faults"]["invalid_input"]["handled"] == 1
