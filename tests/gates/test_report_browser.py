"""The HTML report in a real headless browser: it loads offline, shows the verdict, every dimension, and colour."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from gates.criteria import DIMENSIONS
from gates.report import MARKS
from tests.gates.project import GOOD, MiniProject

BROWSERS = ("chromium-headless-shell", "chromium", "google-chrome")


@pytest.fixture(scope="module")
def browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:  # .ci/run installs it; a developer machine may not have it
        pytest.skip("no headless Chromium: `apt-get install chromium-headless-shell` (Debian) to run this test")
    return found


def headless(browser: str, page: Path, profile: Path, *args: str) -> str:
    """Run the browser on a file URL with no network; returns stdout."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
    cmd += ["--proxy-server=127.0.0.1:9", "--virtual-time-budget=2000", *args, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def test_the_report_renders_the_verdict_every_dimension_and_its_colours(
    browser: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    project = MiniProject(tmp_path)
    project.write_good_evidence()
    project.write_metrics("bench", {**GOOD["bench"], "bench": {"batch1": {"decode_tok_s": 5.0}}})  # one FAIL
    doc = project.evaluate()
    page = tmp_path / "reports" / "release_report.html"
    source = page.read_text()
    assert not re.search(r"<(script|link)\b|src=['\"](?!data:)", source)  # self-contained: nothing to fetch

    dom = headless(browser, page, tmp_path / "profile", "--dump-dom")
    assert re.search(r'id="verdict">Scenario B<', dom) and doc["scenario"] == "B"
    dimensions = {c["dimension"] for c in doc["checks"]}
    assert dimensions and all(f'id="{d}">{d.capitalize()}</h2>' in dom for d in dimensions & set(DIMENSIONS))
    assert "<svg" in dom and "Changed since the previous decision" in dom

    shot = tmp_path / "shot.png"
    headless(browser, page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,1600")
    pixels = {rgb for _, rgb in Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 24)}
    for status in ("PASS", "FAIL"):  # the marks and words were drawn in their colours, no font needed
        colour = MARKS[status][0]
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert rgb in pixels, f"no {status} colour {colour} in the rendered page"
