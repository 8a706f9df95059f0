"""Gate CLI (run from the project root; defaults follow its layout and params.yaml).

python -m gates evaluate [--profile ci] [--metrics FILE ...] [--out reports/]   # decision + report
python -m gates check reports/decision.json                                      # exit 0 only for Scenario A
python -m gates show reports/decision.json                                       # print the decision
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from gates.criteria import GateSpecError
from gates.evidence import read_metrics_file
from gates.report import summary_lines
from gates.run import COVERAGE, SIGNOFF, GateInputs, baseline_for, run_gate


def _params() -> dict[str, Any]:
    path = Path("params.yaml")
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`evaluate`: judge the evidence with params.yaml's defaults and print the decision."""
    params = _params()
    profile = args.profile or params.get("profile", {}).get("name", "ci")
    inputs = GateInputs(
        profile=profile,
        spec=args.spec or Path(params.get("gate_spec", "conf/gates/phase3.yaml")),
        min_samples=args.min_samples or params.get("profile", {}).get("min_samples", 100),
        baseline=args.baseline or baseline_for(profile, params.get("model", {}).get("name", "")),
        signoff=args.signoff,
        coverage=args.coverage,
        out=args.out,
        validate=args.validate,
        context=dict(kv.split("=", 1) for kv in args.context),
    )
    if args.metrics is not None:
        inputs.metrics = args.metrics
    if args.plots is not None:
        inputs.plots = args.plots
    print("\n".join(summary_lines(run_gate(inputs))))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """`check`: the CI step; exit 0 only for Scenario A."""
    doc = read_metrics_file(args.decision)
    print("\n".join(summary_lines(doc)))
    return 0 if doc.get("scenario") == "A" else 1


def cmd_show(args: argparse.Namespace) -> int:
    """`show`: print a decision; always exit 0."""
    print("\n".join(summary_lines(read_metrics_file(args.decision))))
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser (also used for --help)."""
    p = argparse.ArgumentParser(
        prog="python -m gates", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="judge the evidence against the criteria and write the report")
    ev.add_argument("--spec", type=Path, help="criteria file (default: params.yaml's gate_spec)")
    ev.add_argument("--profile", choices=["ci", "weekly", "release"], help="default: params.yaml's profile")
    ev.add_argument("--metrics", type=Path, nargs="*", help="metrics JSON files (default: metrics/*.json + tests)")
    ev.add_argument("--baseline", type=Path, help="baseline metrics (default: baselines/<profile>-<model>.json)")
    ev.add_argument("--signoff", type=Path, default=SIGNOFF, help="YAML of role: true/false approvals")
    ev.add_argument("--coverage", type=Path, default=COVERAGE, help="coverage.py JSON report")
    ev.add_argument("--min-samples", type=int, help="percentiles with fewer samples are INVALID")
    ev.add_argument("--plots", type=Path, nargs="*", help="PNG plots for the report (default: plots/*.png)")
    ev.add_argument("--context", nargs="*", default=[], metavar="KEY=VALUE", help="extra facts for the report")
    ev.add_argument("--no-validate", dest="validate", action="store_false", help="skip Great Expectations")
    ev.add_argument("--out", type=Path, default=Path("reports"), help="output folder")
    ev.set_defaults(func=cmd_evaluate)
    for name, func, text in (
        ("check", cmd_check, "exit 0 only when the decision is Scenario A"),
        ("show", cmd_show, "print the decision and its top reasons"),
    ):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("decision", type=Path, help="reports/decision.json")
        sp.set_defaults(func=func)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; a bad spec or file is one line on stderr and exit 2."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (GateSpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
