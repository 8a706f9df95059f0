"""What every benchmark reports the same way: rank percentiles with their n, a process's memory, the CPU."""

from __future__ import annotations

import platform
from pathlib import Path


def proc_status_mb(field: str, pid: int | str = "self") -> float:
    """A memory field of a process (VmHWM: peak RSS, VmRSS: RSS now, VmSize: address space) from /proc, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(samples: list[float]) -> dict[str, float | int]:
    """Rank-based P50/P95/P99 (nearest rank) over raw samples, with n: percentiles always carry n."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[max(0, -(-len(ordered) * p // 100) - 1)]

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "mean": sum(ordered) / len(ordered), "n": len(ordered)}


def cpu_name() -> str:
    """CPU model for the report, so numbers are read with the hardware that made them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
