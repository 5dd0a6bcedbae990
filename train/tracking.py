"""Metrics to ``<run_dir>/metrics.jsonl`` always, and to wandb when enabled.

Every record carries ``train/step``, which wandb uses as the x-axis of every chart, so eval results
computed after training can still be logged at the checkpoint's training step.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Optional

from train.config import LoggerConfig

STEP_KEY = "train/step"
_RUN_ID_FILE = "wandb_run_id"


class Tracker:
    def __init__(self, run_dir: Path, cfg: LoggerConfig, run_config: dict[str, Any], name: str, enabled: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._wandb = None
        if enabled and cfg.wandb:
            self._wandb = _init_wandb(Path(run_dir), cfg, run_config, name)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        record = {STEP_KEY: step, **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log(record)

    def log_image(self, key: str, png: Path, step: int) -> None:
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Image(str(png)), STEP_KEY: step})

    def log_curve(self, key: str, rows: list[list[Any]], columns: list[str], step: int) -> None:
        """A table (wandb.Table) and its line chart, one line per value of the table's second column."""
        if self._wandb is not None:
            import wandb

            table = wandb.Table(columns=columns, data=rows)
            chart = wandb.plot.line(table, columns[0], columns[2], stroke=columns[1], title=key)
            self._wandb.log({f"{key}_table": table, key: chart, STEP_KEY: step})

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _init_wandb(run_dir: Path, cfg: LoggerConfig, run_config: dict[str, Any], name: str):
    import wandb

    mode = cfg.mode or os.environ.get("WANDB_MODE") or "offline"
    id_file = run_dir / _RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
    run = wandb.init(
        project=cfg.project,
        entity=cfg.entity,
        name=name,
        id=run_id,
        resume="allow",  # resumed training and a later rlvr-eval append to the same run
        dir=str(run_dir),
        mode=mode,
        config=run_config,
    )
    id_file.write_text(run_id)
    run.define_metric(STEP_KEY)
    run.define_metric("*", step_metric=STEP_KEY)
    return run


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop records after ``step`` (logged by a run that crashed after its last checkpoint)."""
    path = Path(run_dir) / "metrics.jsonl"
    if path.exists():
        keep = [r for r in read_metrics(run_dir) if r[STEP_KEY] <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))


RUN_INFO = "run.json"


def write_run_info(run_dir: Path, base: str, config: dict[str, Any]) -> None:
    """What ``rlvr-eval`` needs to sweep this run later: the base model and the resolved config."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / RUN_INFO).write_text(json.dumps({"base_model": base, "config": config}, indent=2))


def read_run_info(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_INFO
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a run folder written by rlvr-train?")
    return json.loads(path.read_text())


def read_metrics(run_dir: Path, key: Optional[str] = None) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl`` (those holding ``key`` when given)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if key is None or key in r]
