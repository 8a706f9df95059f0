"""The rate sweep: it ends by itself with a maximum sustainable rate, its interval, an HTML curve and a diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.loadgen_sweep import KEEP_UP, interval, keep_up, main, saturation

MODEL = "smollm2-135m-instruct"


@pytest.mark.integration
def test_a_sweep_finds_the_knee_and_writes_json_html_and_a_baseline_diff(live, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep.json"
    args = ["--url", live.url, "--model", MODEL, "--slo-ttft-ms", "5000", "--slo-tpot-ms", "1000", "--rates", "2"]
    # 4 s per run, as the serve stage: with 1.5 s a run held ~4 requests, and one slow completion among them
    # read as over-saturation (the first rate judged saturated, nothing sustainable)
    args += ["--repetitions", "2", "--duration-s", "4", "--max-concurrency", "4", "--prompt-len", "16"]
    assert main([*args, "--max-tokens", "4", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["max_sustainable_rps"] > 0 and doc["n"] > 0
    low, high = doc["achieved_rps_interval"]
    assert low <= high and doc["rates"][0]["target_rps"] == pytest.approx(doc["synchronous"]["achieved_rps"])
    assert all(len(r["repetitions"]) == 2 for r in doc["rates"])
    assert "maximum sustainable rate:" in capsys.readouterr().out.splitlines()[-1]
    page = out.with_suffix(".html").read_text()
    assert 'id="knee"' in page and "<svg" in page and "achieved (95% CI)" in page
    # the diff is what is checked here: whether this second run finds a knee too depends on the machine's load
    again = tmp_path / "again.json"
    assert main([*args, "--max-tokens", "4", "--baseline", str(out), "--out", str(again)]) in (0, 1)
    assert json.loads(again.read_text())["baseline"]["max_sustainable_rps"] == doc["max_sustainable_rps"]


def test_a_rate_the_server_cannot_keep_up_with_is_over_saturated() -> None:
    behind = [{"keep_up": 0.8, "ttft_rise": 1.0, "in_flight_rise": 1.0, "in_flight_added": 0}] * 3
    assert saturation(behind) == ["completion rate below 0.98 of the send rate"]
    queueing = [{"keep_up": 1.0, "ttft_rise": 2.0, "in_flight_rise": 1.5, "in_flight_added": 2}]
    assert saturation(queueing * 3) == ["TTFT and requests in flight both rising"]
    jitter = [{**queueing[0], "in_flight_added": 0.5}]  # 1 -> 1.5 in flight: noise, not a queue
    assert saturation(jitter) == []


def test_keeping_up_is_fitted_over_every_request_not_read_off_the_last_one() -> None:
    sent = [i / 3 for i in range(14)]
    steady = [t + 0.3 for t in sent]
    assert keep_up(sent, steady) == pytest.approx(1.0)
    slow_last = [*steady[:-1], steady[-1] + 0.1]  # endpoints alone: 13 / (13/3 + 0.1) * 3/13 = 0.977, "saturated"
    assert keep_up(sent, slow_last) > KEEP_UP
    queue = [t + 0.3 + 0.1 * i for i, t in enumerate(sent)]  # each request waits 0.1 s longer than the one before
    assert keep_up(sent, queue) == pytest.approx(1 / 1.3)
    assert keep_up(sent[:2], steady[:2]) == 1.0


def test_the_interval_is_a_t_interval_over_repetitions() -> None:
    low, high = interval([9.0, 10.0, 11.0])
    assert low == pytest.approx(10 - 4.303 * 1 / 3**0.5, abs=1e-3) and high == pytest.approx(10 + 2.484, abs=1e-3)
    assert interval([7.0]) == [7.0, 7.0]


def test_bad_options_are_one_line_errors(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--url", "http://x", "--model", "m", "--slo-ttft-ms", "1", "--slo-tpot-ms", "1", "--rates", "0"])
    assert "--rates, --repetitions and --max-concurrency must be >= 1" in capsys.readouterr().err
