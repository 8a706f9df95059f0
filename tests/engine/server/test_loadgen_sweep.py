"""The rate sweep: it ends by itself with a maximum sustainable rate, its interval, an HTML curve and a diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.loadgen_sweep import KEEP_UP, interval, keep_up, knee, main, saturation

MODEL = "smollm2-135m-instruct"


@pytest.mark.integration
def test_a_sweep_ends_by_itself_and_writes_json_html_and_a_baseline_diff(live, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep.json"
    args = ["--url", live.url, "--model", MODEL, "--slo-ttft-ms", "5000", "--slo-tpot-ms", "1000", "--rates", "2"]
    args += ["--repetitions", "2", "--duration-s", "4", "--max-concurrency", "4", "--prompt-len", "16"]
    # The first rate is the synchronous one, the edge of what one stream at a time keeps up with: on a machine
    # busy with other tests it can read as saturated (CI saw it twice). Either way the sweep must end by itself,
    # say why, and write everything; which knee it finds is the machine's (knee() is tested on fixed rates below).
    code = main([*args, "--max-tokens", "4", "--out", str(out)])
    doc = json.loads(out.read_text())
    assert doc["rates"][0]["target_rps"] == pytest.approx(doc["synchronous"]["achieved_rps"])
    assert all(len(r["repetitions"]) == 2 for r in doc["rates"])
    last = capsys.readouterr().out.splitlines()[-1]
    if code == 0:
        low, high = doc["achieved_rps_interval"]
        assert doc["max_sustainable_rps"] > 0 and doc["n"] > 0 and low <= high
        assert "maximum sustainable rate:" in last
    else:
        assert code == 1 and doc["max_sustainable_rps"] is None and doc["stopped_by"] and "no sustainable" in last
    page = out.with_suffix(".html").read_text()
    assert 'id="knee"' in page and "<svg" in page and "achieved (95% CI)" in page
    again = tmp_path / "again.json"
    assert main([*args, "--max-tokens", "4", "--baseline", str(out), "--out", str(again)]) in (0, 1)
    assert json.loads(again.read_text())["baseline"]["max_sustainable_rps"] == doc["max_sustainable_rps"]


def test_the_knee_is_the_last_sustainable_rate_and_the_step_above_it() -> None:
    def rate(target: float, ok: bool) -> dict:
        why = [] if ok else ["completion rate below 0.98 of the send rate"]
        return {"target_rps": target, "sustainable": ok, "saturated": why, "achieved_rps": [target - 0.1, target],
                "n": 10}  # fmt: skip

    k = knee([rate(2.0, True), rate(3.0, True), rate(4.0, False)])
    assert k["max_sustainable_rps"] == 3.0 and k["knee_between_rps"] == [3.0, 4.0] and k["n"] == 10
    assert k["achieved_rps_interval"] == [2.9, 3.0] and k["stopped_by"] == [
        "completion rate below 0.98 of the send rate"
    ]
    none = knee([rate(2.0, False)])
    assert none["max_sustainable_rps"] is None and none["knee_between_rps"] == [0.0, None] and none["n"] == 0


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
