"""The responses a sweep drew, kept beside its records (``eval.keep_samples``) for analyses that need text.

One JSON line per (model, problem): the problem's digest, and the first ``keep`` completions with
their verdicts, zlib-compressed and base64-encoded (responses are long and repetitive; a line
stays a line). Written with the records' append-and-fsync discipline, so a killed sweep keeps every
finished line and a torn last line is dropped (:mod:`eval.records`). Later lines win, as for records.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from eval.records import append_lines, read_lines


@dataclass(frozen=True)
class SampleSet:
    """Completions of one model on one problem, as drawn by the sweep, with the verifier's verdicts."""

    model: str  # record name: "base", "step_000050", ...
    problem_id: str
    problem_hash: str  # eval.sweep.problem_hash of the problem the completions answer
    completions: tuple[str, ...]  # the first keep_samples completions, in sampling order
    correct: tuple[bool, ...]  # the verifier's verdict on each

    def __post_init__(self) -> None:
        if len(self.completions) != len(self.correct):
            raise ValueError(f"{len(self.completions)} completions but {len(self.correct)} verdicts")


def samples_path(records_file: Path) -> Path:
    """Where the samples of a records file live: ``records_X.jsonl`` -> ``samples_X.jsonl``."""
    return records_file.with_name("samples_" + records_file.name.removeprefix("records_"))


def append_samples(path: str | Path, sets: list[SampleSet]) -> None:
    append_lines(path, [_encode(s) for s in sets], _decode)


def read_samples(path: str | Path) -> list[SampleSet]:
    """Every sample set in ``path``, one per (model, problem_id), the later line winning."""
    latest: dict[tuple[str, str], SampleSet] = {}
    for s in read_lines(path, _decode, what="sample set"):
        latest[(s.model, s.problem_id)] = s
    return list(latest.values())


def _encode(s: SampleSet) -> str:
    payload = json.dumps({"completions": list(s.completions), "correct": [int(c) for c in s.correct]})
    packed = base64.b64encode(zlib.compress(payload.encode("utf-8"), 6)).decode("ascii")
    return json.dumps({"model": s.model, "problem_id": s.problem_id, "problem_hash": s.problem_hash, "z": packed})


def _decode(line: str) -> SampleSet:
    """One line as a SampleSet; every failure is a ValueError."""
    try:
        obj = json.loads(line)
        payload = json.loads(zlib.decompress(base64.b64decode(obj["z"], validate=True)).decode("utf-8"))
        return SampleSet(str(obj["model"]), str(obj["problem_id"]), str(obj["problem_hash"]),
                         tuple(str(c) for c in payload["completions"]), tuple(bool(c) for c in payload["correct"]))  # fmt: skip
    except (json.JSONDecodeError, KeyError, TypeError, zlib.error, base64.binascii.Error, UnicodeDecodeError) as err:
        raise ValueError(f"not a sample set ({type(err).__name__}: {err})") from None
