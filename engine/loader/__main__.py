"""`python -m engine.loader list`: the supported architectures, each checked for parity with HF transformers
on a tiny random-weight checkpoint built here (about a second each; `--no-check` lists without checking)."""

from __future__ import annotations

import argparse
import json
import sys

from engine.architectures import ARCHITECTURES
from engine.loader.support import support_matrix
from engine.loader.tiny import TINY


def _print_table(rows: list) -> None:
    print(f"{'checkpoint':<20} {'architecture':<22} {'family':<11} {'parity':<7} {'max|dlogit|':>11}  features")
    for r in rows:
        on = ", ".join(k for k, v in r.features.items() if v) or "-"
        status = "PASS" if r.parity.passed else "FAIL"
        print(f"{r.name:<20} {r.architecture:<22} {r.family:<11} {status:<7} {r.parity.max_abs_diff:>11.2e}  {on}")
        if r.parity.error:
            print(f"    error: {r.parity.error}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit status 1 when any checked architecture fails parity."""
    parser = argparse.ArgumentParser(prog="python -m engine.loader", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="supported architectures and their parity status")
    ls.add_argument("--no-check", action="store_true", help="list the architectures without running parity")
    ls.add_argument("--json", action="store_true", help="print the matrix as JSON")
    ls.add_argument("names", nargs="*", choices=[[], *TINY], metavar="CHECKPOINT", help="only these tiny checkpoints")
    args = parser.parse_args(argv)
    if args.no_check:
        for arch, spec in ARCHITECTURES.items():
            print(f"{arch:<24} {spec.family:<11} not checked")
        return 0
    rows = support_matrix(args.names or None)
    if args.json:
        print(json.dumps([r.row() for r in rows], indent=2))
    else:
        _print_table(rows)
        passed = {r.architecture for r in rows if r.parity.passed}
        families = {r.family for r in rows if r.parity.passed}
        print(f"\n{len(passed)} of {len(ARCHITECTURES)} architectures ({len(families)} families) pass parity")
    return 0 if all(r.parity.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
