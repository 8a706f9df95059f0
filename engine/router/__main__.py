"""Serve a model from N engine replicas (separate processes) behind one OpenAI endpoint.

    python -m engine.router --model models/smollm2-135m-instruct --replicas 2 --host 127.0.0.1 --port 8000

GET /admin/replicas lists each replica's id, url, pid, health and outstanding requests.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from engine.router.app import build_router
from engine.router.replicas import ReplicaSet
from engine.server.guards import add_arguments, warn_if_exposed


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: start the replicas and the router under uvicorn."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint directory the child replicas serve (needed when --replicas > 0)")
    p.add_argument("--replicas", type=int, default=2, help="engine servers to start as children")
    p.add_argument(
        "--replica-url",
        action="append",
        default=[],
        help="an engine server someone else runs (e.g. on another machine), balanced beside the children; repeat",
    )
    p.add_argument("--replica-timeout", type=float, default=300.0, help="seconds a replica may take per answer piece")
    p.add_argument("--attempts", type=int, default=3, help="replicas a request is tried on before its first byte")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, help="torch threads per replica")
    p.add_argument("--max-outstanding", type=int, default=64, help="requests in flight beyond which clients get 429")
    p.add_argument("--log-level", default="info")
    add_arguments(p)
    args = p.parse_args(argv)
    if args.replicas < 0 or args.replicas + len(args.replica_url) < 1 or args.attempts < 1:
        p.error("need --replicas >= 0 and at least one replica in all (--replicas or --replica-url); --attempts >= 1")
    if args.replicas and not args.model:
        p.error("--model is needed to start --replicas children")
    warn_if_exposed(args.host, args.api_key)
    replicas = ReplicaSet(args.model, args.replicas, args.threads, urls=args.replica_url)
    max_body = int(args.max_body_mb * 2**20)
    app = build_router(replicas, args.max_outstanding, args.api_key, max_body, args.replica_timeout, args.attempts)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
