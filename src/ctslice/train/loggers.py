"""Where metrics go: the history file (always), wandb (when enabled). The default logger does nothing, and wandb is
imported only inside `WandbLogger`, so a run without it never loads the library.

    loggers = build_loggers(cfg.train, run, wandb_config)      # [History, WandbLogger or NullLogger]
    for logger in loggers: logger.log({"train/loss": 0.4, ...}, step=120, kind="epoch")

kind is "epoch" (the per-epoch metrics) or "batch" (every `log_every` batches); `step` is the global optimizer
step, so wandb's x-axis is shared by both.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import CtsliceError
from ..files import write_atomic

HISTORY_NAME = "training_history.json"
WANDB_RECORD = "wandb_run.json"
# wandb waits 90 s by default for an unreachable server before it fails; a run should not sit that long first
WANDB_INIT_TIMEOUT_S = 30


def write_json_atomic(path: Path, data: Any) -> None:
    """Durable: the run's history and settings are work a power cut must not lose."""
    try:
        write_atomic(path, json.dumps(data, indent=1, allow_nan=False), durable=True)
    except OSError as e:  # full disk, no permission: one line naming the file, no temporary left behind
        raise CtsliceError(f"{path}: cannot write ({e.strerror or e})") from None


def json_safe(value: Any) -> Any:
    """NaN (a structure absent from reference and prediction) becomes null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class NullLogger:
    """Logs nothing: the default when wandb is disabled."""

    def log(self, metrics: dict[str, Any], step: int, kind: str = "epoch") -> None:
        pass

    def log_images(self, samples: list[dict], class_labels: dict[int, str], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class History(NullLogger):
    """RUN/training_history.json: {"epochs": [...], "batches": [...]}, rewritten atomically after every epoch (and
    on close), so it always holds every completed epoch."""

    def __init__(self, run: Path, previous: dict | None = None):
        self.path = Path(run) / HISTORY_NAME
        self.data = previous if previous is not None else {"epochs": [], "batches": []}

    def log(self, metrics: dict[str, Any], step: int, kind: str = "epoch") -> None:
        self.data["epochs" if kind == "epoch" else "batches"].append(json_safe({"step": step, **metrics}))
        if kind == "epoch":
            self.flush()

    def flush(self) -> None:
        write_json_atomic(self.path, self.data)

    def close(self) -> None:
        self.flush()


class WandbLogger(NullLogger):
    """A wandb run: mode "offline" (files under RUN/wandb, `wandb sync` later) or "online" (the API key comes
    from the environment, WANDB_API_KEY, or the user's own `wandb login`; ctslice never writes one). Its id is
    recorded in RUN/wandb_run.json, and a resumed run continues the same wandb run."""

    def __init__(self, mode: str, project: str, run: Path, config: dict[str, Any], resume_id: str | None = None):
        import wandb

        self.wandb = wandb
        try:
            self.run = wandb.init(project=project, dir=str(run), mode=mode, config=config, name=Path(run).name,
                                  id=resume_id, resume="allow" if resume_id else None,
                                  settings=wandb.Settings(console="off", silent=True,
                                                          init_timeout=WANDB_INIT_TIMEOUT_S))
        except Exception as e:  # wandb raises its own errors (no key, no server) and plain ones
            # its messages run over several lines (advice about wandb.init's own arguments): the first says what
            first = (str(e).strip().splitlines() or [""])[0]
            raise CtsliceError(f"wandb ({mode}) could not start a run: {type(e).__name__}: {first}; use --wandb "
                               f"offline (wandb sync later) or disabled, or for online set WANDB_API_KEY and check "
                               f"the network") from None
        write_json_atomic(Path(run) / WANDB_RECORD, {"id": self.run.id, "mode": mode, "project": project,
                                                     "dir": str(Path(self.run.dir).parent)})

    def log(self, metrics: dict[str, Any], step: int, kind: str = "epoch") -> None:
        # per-structure lists stay in the history file; wandb gets scalars
        self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def log_images(self, samples: list[dict], class_labels: dict[int, str], step: int) -> None:
        """samples: {"ct": float (H, W) in [0, 1], "reference", "prediction": int (H, W), "caption": str}."""
        images = [self.wandb.Image(s["ct"], caption=s["caption"], masks={
            "reference": {"mask_data": s["reference"], "class_labels": class_labels},
            "prediction": {"mask_data": s["prediction"], "class_labels": class_labels}}) for s in samples]
        self.run.log({"val/examples": images}, step=step)

    def close(self) -> None:
        self.run.finish()


def previous_wandb_id(run: Path) -> str | None:
    try:
        return json.loads((Path(run) / WANDB_RECORD).read_text())["id"]
    except (OSError, ValueError, KeyError):
        return None


def build_loggers(cfg: TrainConfig, run: Path, wandb_config: dict[str, Any], *, history: dict | None = None,
                  resume: bool = False) -> list[NullLogger]:
    """The history file, plus wandb unless cfg.wandb == "disabled" (then nothing of wandb is imported or written)."""
    loggers: list[NullLogger] = [History(run, history)]
    if cfg.wandb != "disabled":
        loggers.append(WandbLogger(cfg.wandb, cfg.wandb_project, run, wandb_config,
                                   previous_wandb_id(run) if resume else None))
    return loggers
