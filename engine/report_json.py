"""The command-line tools' one way to hand back a JSON report: printed, and written to --out when given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit_json(report: dict[str, Any], out: Path | None) -> None:
    """Print `report` as indented JSON and write the same text to `out` (its folder created) if given."""
    text = json.dumps(report, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)
