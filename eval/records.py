"""Per-problem sweep results, one JSON object a line (``records.jsonl``).

A sweep appends one ``Record`` per (model, problem) as soon as that problem is measured, and
fsyncs, so an interrupted sweep keeps everything it finished; ``done_keys`` tells a restarted
sweep what to skip. A crash can leave a half-written last line: reading skips it with a warning,
and the next append cuts it off before writing. A malformed line anywhere else is corruption and
raises. Later lines win: measuring a (model, problem) again replaces the earlier record.

A record names what it measured beyond the problem id: ``problem_hash`` digests everything about
the problem that decides a verdict (the prompt the model saw, the gold answer, the verifier's
columns), so a sweep never counts a record of other content that happens to share an id (ids can
be row numbers); the sweep's file name carries the rest (verifier, sampling settings).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, TypeVar


@dataclass(frozen=True)
class Record:
    """n samples of one problem from one model, c of them judged correct by the verifier."""

    model: str  # "base" for the base model, else the checkpoint's name, e.g. "step_000050"
    step: int | None  # training step of the checkpoint; None for the base model
    path: str  # the model folder the samples came from
    problem_id: str  # stable id of the problem within its dataset
    n: int  # samples drawn for this problem
    correct: int  # of those, how many the verifier accepted
    task: str = ""  # the task preset the problem belongs to ("" in records of older sweeps)
    problem_hash: str = ""  # digest of the problem's content as swept (eval.sweep.problem_hash); "" = unknown
    tags: dict[str, str] = field(default_factory=dict, hash=False)  # the problem's tags (difficulty, source, class)

    def __post_init__(self) -> None:
        if self.n < 1 or not 0 <= self.correct <= self.n:
            raise ValueError(f"need n >= 1 and 0 <= correct <= n, got n={self.n}, correct={self.correct}")
        if self.step is not None and self.step < 0:
            raise ValueError(f"step must be None (base) or >= 0, got {self.step}")


_FIELDS = tuple(f.name for f in fields(Record))
_REQUIRED = _FIELDS[:6]  # model .. correct: what every records file has held; the rest default
_TAIL_BYTES = 1 << 16  # how much of a file's end is read at a time when looking for its last line


def append_records(path: str | Path, records: Iterable[Record]) -> None:
    """Append ``records`` to the JSONL file at ``path`` (created if missing) and fsync it."""
    append_lines(path, [json.dumps(asdict(r)) for r in records], _parse)


def read_records(path: str | Path) -> list[Record]:
    """All records in ``path``, one per (model, problem_id), the later line winning.

    Order is that of each key's first appearance. A malformed last line (a write cut short by a
    crash) is skipped with a warning; a malformed line before it raises ValueError.
    """
    latest: dict[tuple[str, str], Record] = {}
    for record in read_lines(path, _parse, what="record"):
        latest[(record.model, record.problem_id)] = record
    return list(latest.values())


T = TypeVar("T")


def append_lines(path: str | Path, lines: list[str], parse: Callable[[str], object]) -> None:
    """Append JSON ``lines`` to ``path`` in one write and fsync; a torn last line (``parse`` fails
    on it) is cut off first, so new lines never glue onto it."""
    if not lines:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _repair_tail(path, parse)
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        # fsync, not just flush: a killed job or a lost node must not lose problems it reported done.
        os.fsync(f.fileno())


def read_lines(path: str | Path, parse: Callable[[str], T], what: str = "line") -> list[T]:
    """``parse`` of every non-empty line of ``path``; a malformed last line is skipped with a warning
    (a write cut short), a malformed line before it raises ValueError (corruption)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    parsed: list[T] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            parsed.append(parse(line))
        except ValueError as err:
            if i == last:
                warnings.warn(f"{path}:{i + 1}: skipping a truncated last line ({err})", stacklevel=3)
                break
            raise ValueError(f"{path}:{i + 1}: malformed {what} in the middle of the file: {err}") from err
    return parsed


def done_keys(records: Iterable[Record]) -> dict[tuple[str, str], str]:
    """(model, problem_id) -> problem_hash of what was measured, for a sweep to skip when it resumes."""
    return {(r.model, r.problem_id): r.problem_hash for r in records}


def _parse(line: str) -> Record:
    """One JSON line as a Record; every failure is a ValueError saying what is wrong."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON ({err.msg})") from None
    if not isinstance(obj, dict) or not set(_REQUIRED) <= set(obj) <= set(_FIELDS):
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"expected an object with keys {list(_REQUIRED)} (and optionally {list(_FIELDS[6:])}), got {got}")
    types_ok = (
        isinstance(obj["model"], str)
        and (obj["step"] is None or _is_int(obj["step"]))
        and isinstance(obj["path"], str)
        and isinstance(obj["problem_id"], str)
        and _is_int(obj["n"])
        and _is_int(obj["correct"])
        and isinstance(obj.get("task", ""), str)
        and isinstance(obj.get("problem_hash", ""), str)
        and isinstance(obj.get("tags", {}), dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in obj.get("tags", {}).items())
    )
    if not types_ok:
        raise ValueError(f"wrong field types in {obj}")
    return Record(**obj)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _repair_tail(path: Path, parse: Callable[[str], object]) -> None:
    """Make the file end in a complete line, so appended lines do not glue onto a torn one.

    Reads only the file's end, back to the start of its last line: a sweep appends once per chunk,
    and re-reading a growing file each time would cost quadratic I/O.
    """
    if not path.exists() or (size := path.stat().st_size) == 0:
        return
    with path.open("rb") as f:
        start, chunk = size, b""
        while start > 0 and b"\n" not in chunk.rstrip():
            start = max(0, start - _TAIL_BYTES)
            f.seek(start)
            chunk = f.read(size - start)
    body = chunk.rstrip()
    if not body:
        return
    cut = body.rfind(b"\n") + 1  # start of the last non-empty line within chunk
    last_line = body[cut:]
    try:
        parse(last_line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        warnings.warn(f"{path}: dropping a truncated last line before appending: {last_line[:80]!r}", stacklevel=4)
        os.truncate(path, start + cut)
        return
    if not chunk.endswith(b"\n"):
        # A complete line that only lacks its newline (e.g. written by hand): keep it.
        with path.open("ab") as f:
            f.write(b"\n")
