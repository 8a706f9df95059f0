"""Gate CLI.

python -m gates evaluate --profile ci --metrics metrics/*.json --out reports/   # write the decision + report
python -m gates check reports/decision.json                                      # exit 0 only for Scenario A
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gates.criteria import GateSpecError, load_spec
from gates.decision import classify
from gates.evaluate import ProfileRules, evaluate
from gates.evidence import collect, coverage_evidence, read_metrics_file, signoff_evidence
from gates.report import summary_lines, write_reports


def cmd_evaluate(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    evidence, keys_by_file = collect(args.metrics)
    evidence.update(signoff_evidence(args.signoff, spec.signoff))
    if args.coverage:
        evidence.update(coverage_evidence(args.coverage))
    if args.validate:
        from gates.validate import validate_evidence

        validate_evidence(evidence, keys_by_file)
    baseline: dict[str, float] = {}
    if args.baseline and args.baseline.is_file():
        baseline = {k: e.value for k, e in collect([args.baseline])[0].items() if e.value is not None}
    rules = ProfileRules(name=args.profile, min_samples=args.min_samples, baseline=baseline)
    results = evaluate(spec, evidence, rules)
    decision = classify(results, spec)
    context = dict(kv.split("=", 1) for kv in args.context)
    context.update(
        profile=args.profile,
        spec=str(args.spec),
        evidence_files=sorted(keys_by_file),
        baseline=str(args.baseline) if baseline else None,
    )
    doc = write_reports(args.out, decision, results, context, [p for p in args.plots if p.is_file()])
    print("\n".join(summary_lines(doc)))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    doc = read_metrics_file(args.decision)
    print("\n".join(summary_lines(doc)))
    return 0 if doc.get("scenario") == "A" else 1


def cmd_show(args: argparse.Namespace) -> int:
    print("\n".join(summary_lines(read_metrics_file(args.decision))))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gates", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="judge the evidence against the criteria and write the report")
    ev.add_argument("--spec", type=Path, default=Path("conf/gates/phase3.yaml"), help="criteria file")
    ev.add_argument("--profile", required=True, choices=["ci", "weekly", "release"])
    ev.add_argument(
        "--metrics", type=Path, nargs="*", default=[], help="metrics JSON files (missing ones: no evidence)"
    )
    ev.add_argument("--baseline", type=Path, help="metrics JSON of the baseline run, for regression checks")
    ev.add_argument("--signoff", type=Path, help="YAML of role: true/false approvals")
    ev.add_argument("--coverage", type=Path, help="coverage.py JSON report (tests.coverage_pct)")
    ev.add_argument("--min-samples", type=int, default=100, help="percentiles with fewer samples are INVALID")
    ev.add_argument("--plots", type=Path, nargs="*", default=[], help="PNG plots to include in the report")
    ev.add_argument("--context", nargs="*", default=[], metavar="KEY=VALUE", help="extra facts for the report")
    ev.add_argument("--no-validate", dest="validate", action="store_false", help="skip Great Expectations")
    ev.add_argument("--out", type=Path, default=Path("reports"), help="output folder")
    ev.set_defaults(func=cmd_evaluate)
    ck = sub.add_parser("check", help="exit 0 only when the decision is Scenario A")
    ck.add_argument("decision", type=Path, help="reports/decision.json")
    ck.set_defaults(func=cmd_check)
    sh = sub.add_parser("show", help="print the decision and its top reasons")
    sh.add_argument("decision", type=Path, help="reports/decision.json")
    sh.set_defaults(func=cmd_show)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (GateSpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
