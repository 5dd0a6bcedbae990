"""Metrics to ``<run_dir>/metrics.jsonl`` always, and to wandb when enabled.

Every record carries ``train/step``, which wandb uses as the x-axis of every chart, so eval results
computed after training can still be logged at the checkpoint's training step.

The metrics file follows the checkpoints (:func:`start_metrics`): a resumed run keeps exactly the
records up to its checkpoint's step and logs the rest again; a run that starts from step 0 starts a
new file and a new wandb run, setting the old ones aside (``metrics.before-fresh-start-<time>.jsonl``),
never deleting them. A kill can leave a half-written last line: reading skips it with a warning and
the next writer cuts it off, as ``eval/records.py`` does for sweep records; a malformed line before
the last is corruption and raises.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Optional

from train.config import LoggerConfig
from train.errors import DataError

STEP_KEY = "train/step"
METRICS = "metrics.jsonl"
_RUN_ID_FILE = "wandb_run_id"


class Tracker:
    def __init__(self, run_dir: Path, cfg: LoggerConfig, run_config: dict[str, Any], name: str, enabled: bool = True):
        self.path = Path(run_dir) / METRICS
        self.enabled = enabled
        self._wandb = None
        if enabled and self.path.exists():
            _drop_torn_tail(self.path)  # so that new records do not glue onto a half-written one
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


def start_metrics(run_dir: Path, start_step: int) -> Optional[Path]:
    """Make ``metrics.jsonl`` match the run's start: records up to ``start_step`` when resuming, none from
    step 0 (an earlier file and wandb run id are set aside). Returns where an old file went, if anywhere."""
    if start_step:
        truncate_metrics(run_dir, start_step)
        return None
    return set_aside_metrics(run_dir)


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop records after ``step`` (logged by a run that crashed after its last checkpoint), atomically."""
    path = Path(run_dir) / METRICS
    if path.exists():
        keep = [r for r in read_metrics(run_dir) if r[STEP_KEY] <= step]
        _write_atomically(path, "".join(json.dumps(r) + "\n" for r in keep))


def set_aside_metrics(run_dir: Path) -> Optional[Path]:
    """Rename ``metrics.jsonl`` (and the wandb run id) of an earlier start that left no checkpoint to
    ``metrics.before-fresh-start-<time>.jsonl``; returns the new name, or None when there was none."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"metrics.before-fresh-start-{stamp}.jsonl")
    n = 1
    while aside.exists():  # two fresh starts within a second
        n += 1
        aside = path.with_name(f"metrics.before-fresh-start-{stamp}-{n}.jsonl")
    os.replace(path, aside)
    run_id = Path(run_dir) / _RUN_ID_FILE
    if run_id.exists():  # a new wandb run, so its charts do not hold both starts
        os.replace(run_id, run_id.with_name(f"{_RUN_ID_FILE}.{aside.stem.removeprefix('metrics.')}"))
    print(f"{path} holds steps of an earlier start without a checkpoint; kept as {aside.name}, starting a new one")
    return aside


RUN_INFO = "run.json"


def write_run_info(run_dir: Path, base: str, config: dict[str, Any], placement: Optional[dict[str, Any]] = None) -> None:
    """What ``rlvr-eval`` needs to sweep this run later: the base model and the resolved config; and
    where it ran (``placement``: each process's device, the distributed mode, the precision)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    info = {"base_model": base, "config": config, **({"placement": placement} if placement else {})}
    (Path(run_dir) / RUN_INFO).write_text(json.dumps(info, indent=2))


def read_run_info(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_INFO
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a run folder written by rlvr-train?")
    return json.loads(path.read_text())


def read_metrics(run_dir: Path, key: Optional[str] = None) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl`` (those holding ``key`` when given).

    A malformed last line (a write cut short by a kill) is skipped with a warning naming the file; a
    malformed line before it raises ValueError.
    """
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records, _ = _parse_lines(path)
    return [r for r in records if key is None or key in r]


def _parse_lines(path: Path) -> tuple[list[dict[str, Any]], Optional[int]]:
    """The records of ``path`` and, when its last line is torn, that line's byte offset (else None)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records, offset = [], 0
    for i, line in enumerate(lines):
        if line.strip():
            try:
                records.append(_parse(line))
            except ValueError as err:
                if i != last:
                    raise DataError(
                        f"{path}:{i + 1}: malformed record in the middle of the file ({err}); the file is corrupt: "
                        f"restore it or move it away (a resumed run then starts a new one)"
                    ) from None
                warnings.warn(f"{path}:{i + 1}: skipping a truncated last line ({err})", stacklevel=3)
                return records, offset
        offset += len(line) + 1
    return records, None


def _parse(line: bytes) -> dict[str, Any]:
    """One metrics record; every failure is a ValueError saying what is wrong."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(record, dict) or not isinstance(record.get(STEP_KEY), int):
        raise ValueError(f"not a record with an integer {STEP_KEY!r}: {line[:80]!r}")
    return record


def _drop_torn_tail(path: Path) -> None:
    """Cut a half-written last line off ``path`` (with the warning :func:`_parse_lines` gives)."""
    _, torn_at = _parse_lines(path)
    if torn_at is not None:
        os.truncate(path, torn_at)
    elif path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        with path.open("ab") as f:  # a whole record that only lacks its newline: keep it
            f.write(b"\n")


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a kill leaves the old file or the new one, never half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
