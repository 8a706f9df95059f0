"""Stage `faults`: the criteria's Part 4.2 errors injected into real processes (`python -m pipelines faults`).

Per error type: `handled` (1 only when every trial showed the documented behaviour), `n` trials and what they
measured; `faults.recovery_s` is the P95 over trials of node-failure failover (kill to the last request sent
right after it answered by the other replica), `faults.handled_pct` the share of all trials handled.
Writes metrics/faults.json (namespace `faults`).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from engine.cluster.fault_proxy import FaultProxy, NetworkFaults
from engine.stats import percentiles
from pipelines import fault_trials
from pipelines.common import TRANSIENT_RETRIES, now_utc, stage_run_name, write_metrics
from pipelines.config import QuantConf, TollgateConf, load_params
from pipelines.live_server import running, running_router, running_server, serving
from pipelines.quant_eval import heldout_ids

BURST = 8  # concurrent requests against a server that admits 1 running and 1 waiting
REPLICA_TIMEOUT_S = 3.0  # the router's bound per replica answer; the faulty link delays 1-5 s
REQUESTS, BOUND_S = 16, 15.0  # per network trial; each must be answered within BOUND_S (two tries and a backoff)
MEMORY_LIMIT = 32, 2000  # MiB of address space granted beyond the server's own, and a prompt whose prefill needs more
HOLDS = 8  # the overload server runs 4 sequences and queues 4; twice that many clients overload it
QUANTIZATION_KL_TOKENS = 256  # held-out tokens the degraded model is compared with fp32 on, per trial


@task(**TRANSIENT_RETRIES)
def served_faults(p: TollgateConf) -> dict[str, list[dict[str, Any]]]:
    """Invalid input on the pipeline's server; rate limiting on one that queues a single request; out of memory
    mid-stream, injected into the engine and for real under an address-space limit; twice the load a small server
    holds."""
    model = Path(p.model.path).name
    with running_server(p) as url:
        invalid = fault_trials.invalid_input(url, model)  # each malformed body once: n = len(INVALID_BODIES)
    with running_server(p, "--max-num-seqs", "1", "--max-waiting", "1") as url:
        limited = [fault_trials.rate_limiting(url, model, BURST) for _ in range(p.profile.faults.trials)]
    with running_server(p, env={"TOLLGATE_FAULT": "out_of_memory"}) as url:
        oom = [fault_trials.out_of_memory(url, model) for _ in range(p.profile.faults.trials)]
    with serving(p) as (url, proc):
        oom += [fault_trials.memory_limit(url, proc.pid, model, *MEMORY_LIMIT) for _ in range(p.profile.faults.trials)]
    with running_server(p, "--max-num-seqs", str(HOLDS // 2), "--max-waiting", str(HOLDS // 2)) as url:
        seconds = p.profile.faults.overload_s
        overload = [fault_trials.overload(url, model, HOLDS, seconds) for _ in range(p.profile.faults.trials)]
    return {"invalid_input": invalid, "rate_limiting": limited, "out_of_memory": oom, "overload": overload}


@task(**TRANSIENT_RETRIES)
def node_failures(p: TollgateConf) -> list[dict[str, Any]]:
    """A replica SIGKILLed with streams in flight, `trials` times, behind one router."""
    model, f = Path(p.model.path).name, p.profile.faults
    with running_router(p, replicas=2) as (url, _):
        trials = []
        for i in range(f.trials):
            trials.append(fault_trials.node_failure(url, model, f.stream_tokens))
            get_run_logger().info("node failure %d/%d: %s", i + 1, f.trials, trials[-1])
        return trials


@task(**TRANSIENT_RETRIES)
def network_faults(p: TollgateConf) -> list[dict[str, Any]]:
    """Two replicas behind a router; the path to one delays, resets and drops requests (engine/cluster/fault_proxy)."""
    model, faults = Path(p.model.path).name, NetworkFaults()
    with running_server(p) as bad, running_server(p) as good, FaultProxy(int(bad.rsplit(":", 1)[1]), faults) as via:
        args = ["--replicas", "0", "--replica-url", via, "--replica-url", good, "--log-level", "warning"]
        with running("engine.router", [*args, "--replica-timeout", str(REPLICA_TIMEOUT_S)]) as (router, _):
            trials = []
            for _ in range(p.profile.faults.trials):
                before = Counter(faults.injected)
                trial = fault_trials.network_timeout(router, good, model, REQUESTS, BOUND_S)
                trials.append(trial | {"injected": dict(faults.injected - before)})
    if set(faults.injected) != {"reset", "silence", "delay"}:  # a link that never misbehaved proved nothing
        trials[-1] |= {"handled": False, "why": f"faults injected in all: {dict(faults.injected)}"}
    return trials


def summarize(trials: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per type: handled only if every trial was; failover percentiles; the share of all trials handled."""
    out: dict[str, Any] = {
        kind: {"handled": int(all(t["handled"] for t in ts)), "n": len(ts), "trials": ts} for kind, ts in trials.items()
    }
    failover = percentiles([t["failover_s"] for t in trials["node_failure"]])
    readmit = [t["readmit_s"] for t in trials["node_failure"] if t["readmit_s"] is not None]
    out["node_failure"].update(failover_s=failover, readmit_s=percentiles(readmit) if readmit else None)
    every = [t["handled"] for ts in trials.values() for t in ts]
    out["recovery_s"] = failover["p95"]
    out["handled_pct"] = 100.0 * sum(every) / len(every)
    out["n"] = failover["n"]
    return out


@flow(name="faults", flow_run_name=stage_run_name)
def faults_flow(params_path: str = "params.yaml") -> dict[str, Any]:
    """Inject every fault the stage knows, `trials` times each; write the evidence."""
    started = now_utc()
    p = load_params(Path(params_path))
    trials = served_faults(p)
    trials["node_failure"] = node_failures(p)
    trials["network_timeout"] = network_faults(p)
    with tempfile.TemporaryDirectory() as scratch:
        trials["model_load"] = fault_trials.model_load(Path(scratch), Path(p.model.path))
    gptq = p.calibrate.strategies.get("gptq", QuantConf("gptq"))
    heldout = heldout_ids(p, QUANTIZATION_KL_TOKENS)
    trials["quantization"] = fault_trials.quantization(Path(p.model.path), dict(gptq.options), heldout)
    metrics = {"faults": summarize(trials)}
    metrics["faults"]["quantization"]["kl_mean"] = max(t["kl_mean"] for t in trials["quantization"])
    write_metrics("faults", metrics, params_path, started)
    return metrics
