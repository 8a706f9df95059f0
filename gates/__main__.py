"""Gate CLI (run from the project root; defaults follow its layout and params.yaml).

python -m gates evaluate [--profile ci] [--metrics FILE ...] [--out reports/]   # decision + report
python -m gates check reports/decision.json      # re-verify; exit 0 only for a verified Scenario A
python -m gates show reports/decision.json       # print every criterion
python -m gates github reports/decision.json     # the run's summary page and ::error annotations (CI)
python -m gates compare OLD NEW                  # new failures, fixed checks, metric moves (files or MLflow runs)
python -m gates baseline update                  # write baselines/<profile>-<model>.json with provenance

`check` exits 0 for a verified A, 1 for a verified B/C/INVALID, 3 when the decision cannot be trusted (evidence
changed, other commit, too old, overrides, or a re-evaluation disagrees), 2 on bad input. Any option of
`evaluate` that departs from the project's declared defaults is an override, stamped in the decision.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from gates.baseline import update_baseline
from gates.evidence import read_metrics_file
from gates.github import publish
from gates.history import NOISE_PCT, compare, load_decision
from gates.report import full_listing, summary_lines
from gates.run import SIGNOFF, GateInputs, run_gate
from gates.verify import CheckOptions, verify


def _params() -> dict[str, Any]:
    path = Path("params.yaml")
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`evaluate`: judge the evidence with params.yaml's settings and print the decision."""
    params = _params()
    profile = args.profile or params.get("profile", {}).get("name", "ci")
    inputs = GateInputs(
        profile=profile,
        model=params.get("model", {}).get("name", ""),
        spec=args.spec,
        min_samples=args.min_samples,
        metrics=args.metrics,
        baseline=args.baseline,
        signoff=args.signoff,
        validate=args.validate,
        params=params or None,
        out=args.out,
        context=dict(kv.split("=", 1) for kv in args.context),
        previous=load_decision(str(args.previous)) if args.previous else None,
    )
    if args.plots is not None:
        inputs.plots = args.plots
    print("\n".join(summary_lines(run_gate(inputs))))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """`check`: the CI step; 0 only when the decision re-verifies and is Scenario A."""
    doc = read_metrics_file(args.decision)
    options = CheckOptions(args.allow_other_commit, args.accept_overrides, args.max_age)
    problems = verify(doc, options)
    if problems:
        print(f"{args.decision}: NOT TRUSTED", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 3
    print("\n".join(summary_lines(doc)))
    return 0 if doc.get("scenario") == "A" else 1


def cmd_show(args: argparse.Namespace) -> int:
    """`show`: print every criterion of a decision; always exit 0."""
    print("\n".join(full_listing(read_metrics_file(args.decision))))
    return 0


def cmd_github(args: argparse.Namespace) -> int:
    """`github`: the decision on a GitHub Actions run's summary page, with an annotation per flagged criterion."""
    publish(args.decision)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """`compare`: what changed from one decision to another (decision.json paths or MLflow gate run ids)."""
    print("\n".join(compare(args.old, args.new, args.noise_pct, args.tracking_uri)))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """`baseline update`: the current evidence becomes the regression baseline, with its provenance."""
    params = _params()
    profile = args.profile or params.get("profile", {}).get("name", "ci")
    model = args.model or params.get("model", {}).get("name", "")
    print(f"wrote {update_baseline(profile, model)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gates", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="judge the evidence against the criteria and write the report")
    ev.add_argument("--spec", type=Path, help="criteria file (override; default conf/gates/phase3.yaml)")
    ev.add_argument("--profile", help="a profile of conf/profile/ (default: params.yaml's)")
    ev.add_argument("--metrics", type=Path, nargs="*", help="evidence files (override; default: dvc.yaml's)")
    ev.add_argument("--baseline", type=Path, help="baseline (override; default baselines/<profile>-<model>.json)")
    ev.add_argument("--signoff", type=Path, default=SIGNOFF, help="lines of `role: true|false`")
    ev.add_argument("--min-samples", type=int, help="override the profile's declared minimum sample count")
    ev.add_argument("--plots", type=Path, nargs="*", help="PNG plots for the report (default: plots/*.png)")
    ev.add_argument("--context", nargs="*", default=[], metavar="KEY=VALUE", help="extra facts for the report")
    ev.add_argument("--no-validate", dest="validate", action="store_false", help="skip Great Expectations (override)")
    ev.add_argument("--previous", type=Path, help="an earlier decision.json, for the 'changed since' section")
    ev.add_argument("--out", type=Path, default=Path("reports"), help="output folder")
    ev.set_defaults(func=cmd_evaluate)
    ck = sub.add_parser("check", help="re-verify a decision; exit 0 only for a trusted Scenario A")
    ck.add_argument("decision", type=Path, help="reports/decision.json")
    ck.add_argument("--allow-other-commit", action="store_true", help="accept evidence from another commit")
    ck.add_argument("--accept-overrides", action="store_true", help="accept a decision made with overrides")
    ck.add_argument("--max-age", type=float, default=7.0, metavar="DAYS", help="oldest acceptable decision")
    ck.set_defaults(func=cmd_check)
    sh = sub.add_parser("show", help="print every criterion of a decision")
    sh.add_argument("decision", type=Path, help="reports/decision.json")
    sh.set_defaults(func=cmd_show)
    gh = sub.add_parser("github", help="write the decision to $GITHUB_STEP_SUMMARY and print annotations")
    gh.add_argument("decision", type=Path, help="reports/decision.json")
    gh.set_defaults(func=cmd_github)
    cp = sub.add_parser("compare", help="what changed between two decisions")
    cp.add_argument("old", help="the earlier decision: a decision.json path or an MLflow gate run id")
    cp.add_argument("new", help="the later decision, likewise")
    cp.add_argument("--noise-pct", type=float, default=NOISE_PCT, help="smallest metric move to list (%%)")
    cp.add_argument("--tracking-uri", help="MLflow store for run ids (default: the project's mlruns/mlflow.db)")
    cp.set_defaults(func=cmd_compare)
    bl = sub.add_parser("baseline", help="manage regression baselines")
    bl.add_argument("action", choices=["update"], help="update: write it from the current evidence")
    bl.add_argument("--profile", help="default: params.yaml's")
    bl.add_argument("--model", help="default: params.yaml's")
    bl.set_defaults(func=cmd_baseline)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; a bad spec, profile or file is one line on stderr and exit 2."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError) as exc:  # every gate error (spec, profile, registry, evidence) is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
