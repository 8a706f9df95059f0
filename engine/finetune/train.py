"""The training loop: shuffled batches, loss on assistant tokens, validation with early stopping, checkpoints a
killed run resumes from, and a cancel check between steps."""

from __future__ import annotations

import json
import math
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from engine.finetune.data import IGNORE, DataError, Example, read_jsonl, tokenize
from engine.finetune.model import LoraSettings, kl_to_base, masked_loss, trainable
from engine.loader import load_tokenizer
from engine.progress import progress
from engine.quant.base import QuantizationError
from engine.quant.calibration import DEFAULT_CALIBRATION
from engine.quant.calibration_mix import mix_batches

ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"
STATE = "trainer_state.pt"
Events = Callable[[str, dict[str, Any]], None]


class Cancelled(Exception):
    """The run was asked to stop; nothing after the last checkpoint is kept."""


@dataclass
class TrainSettings:
    """Optimisation knobs (OpenAI's hyperparameters map onto epochs, batch_size and learning_rate)."""

    learning_rate: float = 1e-3
    epochs: int = 1
    batch_size: int = 8
    max_steps: int | None = None
    max_len: int = 256
    eval_every: int = 10
    patience: int = 3  # evaluations without a better validation loss before stopping early
    checkpoint_every: int = 10
    keep_checkpoints: int = 3
    seed: int = 0
    kl_weight: float = 1.0  # 0: no penalty; without it the task adapter raised wikitext-2 perplexity 8.6%
    kl_tokens: int = 64  # general-text tokens the penalty sees per step
    kl_text: str = DEFAULT_CALIBRATION  # a text or a calibration mix; the evaluation texts stay unseen

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.epochs < 1 or self.batch_size < 1 or (self.max_steps or 1) < 1:
            raise ValueError("need learning_rate > 0, epochs >= 1, batch_size >= 1 and max_steps >= 1")
        if self.kl_weight < 0 or self.kl_tokens < 2:
            raise ValueError("need kl_weight >= 0 and kl_tokens >= 2")


@dataclass
class TrainResult:
    """What a run did, for metrics, the API's job record and the report."""

    adapter: str
    steps: int
    tokens: int
    seconds: float
    tokens_per_s: float
    best_valid_loss: float | None
    stopped_early: bool
    resumed_from: int | None
    peak_rss_mb: float
    history: list[dict[str, float]] = field(default_factory=list)


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pad(rows: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([i + [pad_id] * (width - len(i)) for i, _ in rows])
    labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in rows])
    attention = (torch.arange(width)[None] < torch.tensor([len(i) for i, _ in rows])[:, None]).long()
    return ids, labels, attention


def _order(count: int, epoch: int, seed: int) -> list[int]:
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()


def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / CHECKPOINTS).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def _atomic_save(model: Any, target: Path, extra: dict[str, Any] | None = None) -> None:
    """Write the adapter (and trainer state) to a temporary folder, then rename: a kill never leaves half."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    if extra is not None:
        torch.save(extra, tmp / STATE)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


class Trainer:
    """One run's state: model, optimizer, data order, history; `run()` trains to the end or an early stop."""

    def __init__(
        self,
        base: str | Path,
        lora: LoraSettings,
        settings: TrainSettings,
        train: list[Example],
        valid: list[Example],
        out: str | Path,
        tokenizer: Any,
    ) -> None:
        self.lora, self.settings, self.out = lora, settings, Path(out)
        self.train_rows = [tokenize(e, tokenizer, settings.max_len) for e in train]
        self.valid_rows = [tokenize(e, tokenizer, settings.max_len) for e in valid]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        per_epoch = math.ceil(len(self.train_rows) / settings.batch_size)
        self.total_steps = min(settings.max_steps or per_epoch * settings.epochs, per_epoch * settings.epochs)
        self.kl_windows = self._kl_windows(tokenizer)
        torch.manual_seed(settings.seed)
        self.model = trainable(base, lora)
        self.model.train()  # from_pretrained returns eval mode: no dropout, no gradient checkpointing
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, settings.learning_rate)
        self.step, self.tokens, self.history = 0, 0, []
        self.best: tuple[float, dict[str, torch.Tensor]] | None = None
        self.bad_evals = 0

    @classmethod
    def from_files(
        cls, base: str, lora: dict[str, Any], settings: dict[str, Any], train: str, valid: str | None, out: str
    ) -> Trainer:
        """A run from what a flow's parameters hold: settings as dicts, the data as JSONL paths."""
        rows = read_jsonl(train), read_jsonl(valid) if valid else []
        return cls(base, LoraSettings(**lora), TrainSettings(**settings), *rows, out, load_tokenizer(base))

    def _kl_windows(self, tokenizer: Any) -> list[list[int]]:
        """About one general-text window per step of the run (reused in turn if the text is shorter), in an order
        fixed by the seed, so a resumed run sees the same; none when the penalty is off."""
        s = self.settings
        if s.kl_weight == 0:
            return []
        try:
            windows = mix_batches(tokenizer, s.kl_text, s.kl_tokens * self.total_steps, s.kl_tokens)
        except QuantizationError as exc:
            raise DataError(s.kl_text, 0, f"the KL penalty's general text (kl_text): {exc}") from None
        if not windows:
            raise DataError(s.kl_text, 0, "the KL penalty's general text (kl_text) has fewer than 2 tokens")
        return [windows[i] for i in _order(len(windows), 0, s.seed)]

    def batch(self, step: int) -> tuple[torch.Tensor, ...]:
        """The rows of one step: epoch-wise shuffles fixed by the seed, so a resumed run sees the same data."""
        size, count = self.settings.batch_size, len(self.train_rows)
        per_epoch = math.ceil(count / size)
        order = _order(count, step // per_epoch, self.settings.seed)
        start = (step % per_epoch) * size
        return _pad([self.train_rows[i] for i in order[start : start + size]], self.pad_id)

    @torch.no_grad()
    def valid_loss(self) -> float:
        """Token-weighted mean loss over the validation split.

        Only dropout is switched to eval mode: bitsandbytes 0.50's Linear4bit repacks its weight for a CPU
        inference kernel when it runs in eval mode, and its training path then computes with the repacked
        weight as if it were not (QLoRA's loss jumped from 0.03 to 18 right after the first validation)."""
        dropouts = [m for m in self.model.modules() if isinstance(m, torch.nn.Dropout) and m.training]
        for module in dropouts:
            module.eval()
        total = count = 0.0
        size = self.settings.batch_size
        try:
            for start in range(0, len(self.valid_rows), size):
                ids, labels, attention = _pad(self.valid_rows[start : start + size], self.pad_id)
                n = int((labels[:, 1:] != IGNORE).sum())
                total += float(masked_loss(self.model, ids, labels, attention)) * n
                count += n
        finally:
            for module in dropouts:
                module.train()
        return total / max(count, 1)

    def resume(self) -> int | None:
        """Load the newest checkpoint, if any; the step it was taken at."""
        found = _checkpoints(self.out)
        if not found:
            return None
        from peft import set_peft_model_state_dict

        state = torch.load(found[-1] / STATE, weights_only=False)
        set_peft_model_state_dict(self.model, load_file(str(found[-1] / "adapter_model.safetensors")))
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.tokens, self.history = state["step"], state["tokens"], state["history"]
        self.best, self.bad_evals = state["best"], state["bad_evals"]
        return self.step

    def checkpoint(self) -> Path:
        """Adapter and trainer state at this step; older checkpoints beyond `keep_checkpoints` are removed."""
        state = {
            "step": self.step,
            "tokens": self.tokens,
            "history": self.history,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "optimizer": self.optimizer.state_dict(),
        }
        target = self.out / CHECKPOINTS / f"step-{self.step:06d}"
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(self.model, target, state)
        for old in _checkpoints(self.out)[: -self.settings.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def evaluate(self) -> bool:
        """Validation loss into the history; True when early stopping says to stop."""
        loss = self.valid_loss()
        self.history[-1]["valid_loss"] = loss
        if self.best is None or loss < self.best[0]:
            trained = {k: v.detach().clone() for k, v in self.model.named_parameters() if v.requires_grad}
            self.best, self.bad_evals = (loss, trained), 0
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.settings.patience

    def train_step(self) -> dict[str, float]:
        """One optimiser step on the task loss (plus the KL penalty); both losses, for the history."""
        ids, labels, attention = self.batch(self.step)
        task = masked_loss(self.model, ids, labels, attention)
        losses = {"train_loss": task.item()}
        if self.kl_windows:
            kl = kl_to_base(self.model, torch.tensor([self.kl_windows[self.step % len(self.kl_windows)]]))
            task = task + self.settings.kl_weight * kl
            losses["kl"] = kl.item()
        task.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += int(attention.sum())
        return losses

    def save_best(self) -> Path:
        """The adapter with the best validation loss (the last one when there was no validation)."""
        if self.best is not None:
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, value in self.best[1].items():
                    params[name].copy_(value)
        target = self.out / ADAPTER
        _atomic_save(self.model, target)
        return target

    def validate_and_checkpoint(self, emit: Events) -> bool:
        """Validation (and its event) every `eval_every` steps and at the end, a checkpoint every
        `checkpoint_every` steps before it; True when early stopping says to stop."""
        s, stopped = self.settings, False
        last = self.step == self.total_steps
        if self.step % s.eval_every == 0 or last:
            message = f"step {self.step}/{self.total_steps}: training loss {self.history[-1]['train_loss']:.4f}"
            if self.valid_rows:
                stopped = self.evaluate()
                message += f", validation loss {self.history[-1]['valid_loss']:.4f}"
            emit(message, self.history[-1])
        if self.step % s.checkpoint_every == 0 and not last and not stopped:
            emit(f"checkpoint at step {self.step}", {"path": str(self.checkpoint())})
        return stopped

    def run(self, on_event: Events | None = None, should_stop: Callable[[], bool] | None = None) -> TrainResult:
        """Train from the newest checkpoint (or the start) to the end, an early stop, or a cancel."""
        emit = on_event or (lambda _message, _data: None)
        resumed = self.resume()
        if resumed is not None:
            emit(f"resumed from the checkpoint at step {resumed}", {"step": resumed})
        start_time, start_tokens, stopped = time.perf_counter(), self.tokens, False
        bar = progress(total=self.total_steps, initial=self.step, desc="fine-tune", unit="step")
        while self.step < self.total_steps and not stopped:
            if should_stop and should_stop():
                raise Cancelled(f"cancelled at step {self.step}")
            losses = self.train_step()
            elapsed = time.perf_counter() - start_time
            self.history.append({"step": self.step, **losses, "tokens": self.tokens})
            rate = (self.tokens - start_tokens) / max(elapsed, 1e-9)
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()} | {"tok_s": f"{rate:.0f}"}, refresh=False)
            stopped = self.validate_and_checkpoint(emit)
        bar.close()
        seconds = time.perf_counter() - start_time
        adapter = self.save_best()
        trained_tokens = self.tokens - start_tokens
        return TrainResult(
            adapter=str(adapter),
            steps=self.step,
            tokens=self.tokens,
            seconds=seconds,
            tokens_per_s=trained_tokens / max(seconds, 1e-9),
            best_valid_loss=None if self.best is None else self.best[0],
            stopped_early=stopped,
            resumed_from=resumed,
            peak_rss_mb=peak_rss_mb(),
            history=self.history,
        )


def write_result(result: TrainResult, path: str | Path) -> None:
    """The result as JSON (the history included)."""
    Path(path).write_text(json.dumps(asdict(result), indent=2))
