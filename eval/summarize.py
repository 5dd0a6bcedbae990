"""Records -> pass@k per model, the sample-efficiency gap ΔSE, ``summary.json`` and a table.

For every model the sweep measured, pass@k (k = 1, 2, 4, ..., k_max) is averaged over problems.
Yue et al. 2025 (arXiv 2504.13837) compare an RL-trained checkpoint's pass@1 with the base
model's pass@k_max: ΔSE = base pass@k_max - checkpoint pass@1 is how far RL's single sample stays
below what the base model reaches with k_max of them (smaller is better). Reads records only.

The summary is a plain dict (``Summary``) because the sweep, the plots and outside readers of
``summary.json`` share it; the TypedDicts below spell out its contract.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TypedDict

import numpy as np
from rich.console import Console
from rich.table import Table

from eval.passk import pass_at_k, powers_of_two_upto
from eval.records import Record


class ModelSummary(TypedDict):
    model: str  # record name, "base" for the base model
    path: str  # model folder
    pass_at_k: dict[int, float]  # k -> pass@k in [0, 1], averaged over problems


class CheckpointSummary(ModelSummary):
    step: int  # training step
    delta_se: float  # base pass@k_max - this checkpoint's pass@1 (ΔSE)


class Summary(TypedDict):
    k_max: int  # largest k reported; ΔSE uses the base's pass@k_max
    n: int  # samples per problem, the same for every model
    num_problems: int  # problems every model was measured on
    base: ModelSummary
    checkpoints: list[CheckpointSummary]  # ordered by step


class SummaryError(ValueError):
    """Records that cannot be summarised as they are; the message says what to fix."""


def summarize(records: Iterable[Record], k_max: int | None = None) -> Summary:
    """pass@k of the base model and of every checkpoint, with ΔSE, from per-problem records.

    records: any order; a repeated (model, problem_id) keeps its later record, as read_records does.
    k_max: largest k reported (k = 1, 2, 4, ..., k_max); defaults to n, the samples per problem.
    Raises SummaryError unless there is exactly one base model (step None), every model has one n,
    and every checkpoint was measured on the base's problems.
    """
    by_model = _group(records)
    base_name = _base_name(by_model)
    n = _common_n(by_model)
    k_max = n if k_max is None else k_max
    if not 1 <= k_max <= n:
        raise SummaryError(f"k_max must be between 1 and n = {n} (samples per problem), got {k_max}")
    ks = powers_of_two_upto(k_max)
    problem_ids = _common_problems(by_model, base_name)

    base_records = by_model.pop(base_name)
    base = ModelSummary(
        model=base_name,
        path=base_records[problem_ids[0]].path,
        pass_at_k=_curve(base_records, problem_ids, ks),
    )
    checkpoints: list[CheckpointSummary] = []
    for name, by_problem in by_model.items():
        first = by_problem[problem_ids[0]]
        assert first.step is not None  # _base_name took the one model with step None
        curve = _curve(by_problem, problem_ids, ks)
        checkpoints.append(
            CheckpointSummary(
                model=name,
                path=first.path,
                pass_at_k=curve,
                step=first.step,
                delta_se=base["pass_at_k"][k_max] - curve[1],
            )
        )
    checkpoints.sort(key=lambda ckpt: (ckpt["step"], ckpt["model"]))
    return Summary(k_max=k_max, n=n, num_problems=len(problem_ids), base=base, checkpoints=checkpoints)


def _group(records: Iterable[Record]) -> dict[str, dict[str, Record]]:
    """model -> problem_id -> record (later wins); checks each model has one step and one path."""
    by_model: dict[str, dict[str, Record]] = {}
    for record in records:
        by_model.setdefault(record.model, {})[record.problem_id] = record
    if not by_model:
        raise SummaryError("no records to summarise: has the sweep run yet?")
    for name, by_problem in by_model.items():
        identities = {(r.step, r.path) for r in by_problem.values()}
        if len(identities) > 1:
            raise SummaryError(
                f"model {name!r} has records with different (step, path): {sorted(identities, key=str)}; "
                "each model name must denote one model folder"
            )
    return by_model


def _base_name(by_model: dict[str, dict[str, Record]]) -> str:
    """The one model whose records have step None."""
    bases = sorted(name for name, rs in by_model.items() if next(iter(rs.values())).step is None)
    if len(bases) != 1:
        checkpoints = sorted(set(by_model) - set(bases))
        raise SummaryError(
            f"ΔSE needs exactly one base model (records with step None), found {len(bases)}: {bases}; "
            f"checkpoints found: {checkpoints}. Sweep the base model too, or drop the extra one."
        )
    return bases[0]


def _common_n(by_model: dict[str, dict[str, Record]]) -> int:
    """The samples per problem shared by every record."""
    ns_by_model = {name: sorted({r.n for r in rs.values()}) for name, rs in by_model.items()}
    for name, ns in ns_by_model.items():
        if len(ns) > 1:
            raise SummaryError(
                f"model {name!r} has records with different n (samples per problem): {ns}; "
                "re-sweep it with one eval.n so its pass@k averages like with like"
            )
    distinct = {ns[0] for ns in ns_by_model.values()}
    if len(distinct) > 1:
        found = ", ".join(f"{name}: {ns[0]}" for name, ns in sorted(ns_by_model.items()))
        raise SummaryError(
            f"models were swept with different n (samples per problem): {found}; sweep them with one eval.n"
        )
    return distinct.pop()


def _common_problems(by_model: dict[str, dict[str, Record]], base_name: str) -> list[str]:
    """The base's problem ids, sorted, after checking every checkpoint has exactly these."""
    base_ids = set(by_model[base_name])
    for name, by_problem in sorted(by_model.items()):
        ids = set(by_problem)
        if ids != base_ids:
            missing, extra = sorted(base_ids - ids), sorted(ids - base_ids)
            raise SummaryError(
                f"model {name!r} was measured on {len(ids)} problems, the base {base_name!r} on "
                f"{len(base_ids)}: {len(missing)} missing (e.g. {missing[:3]}), {len(extra)} extra "
                f"(e.g. {extra[:3]}). Finish (resume) the sweep so both cover the same problems."
            )
    return sorted(base_ids)


def _curve(by_problem: dict[str, Record], problem_ids: list[str], ks: list[int]) -> dict[int, float]:
    """k -> pass@k averaged over ``problem_ids``."""
    n = np.array([by_problem[p].n for p in problem_ids])  # (P,)
    correct = np.array([by_problem[p].correct for p in problem_ids])  # (P,)
    return {k: float(np.mean(pass_at_k(n, correct, k))) for k in ks}


def write_summary(summary: Summary, path: str | Path) -> Path:
    """Write ``summary`` as indented JSON (its int k keys become strings) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_summary(path: str | Path) -> Summary:
    """Read a summary written by ``write_summary``, turning the pass@k keys back into ints."""
    summary = json.loads(Path(path).read_text(encoding="utf-8"))
    for model in [summary["base"], *summary["checkpoints"]]:
        model["pass_at_k"] = {int(k): float(v) for k, v in model["pass_at_k"].items()}
    return summary


def table_ks(ks: list[int], max_columns: int = 6) -> list[int]:
    """The k shown in the table: all of them if they fit, else every 2nd (1, 4, 16, ...) or
    sparser power of two, always ending with k_max, so a 100-column terminal holds the table.

    >>> table_ks([1, 2, 4, 8])
    [1, 2, 4, 8]
    >>> table_ks([1, 2, 4, 8, 16, 32, 64, 128, 256])
    [1, 4, 16, 64, 256]
    >>> table_ks([1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
    [1, 4, 16, 64, 256, 512]
    """
    stride = 1
    while True:
        shown = ks[::stride]
        if shown[-1] != ks[-1]:
            shown = [*shown, ks[-1]]
        if len(shown) <= max_columns or len(shown) <= 2:
            return shown
        stride += 1


def format_table(summary: Summary) -> Table:
    """One row per model (base first, then checkpoints by step): pass@k in % and ΔSE in points."""
    ks = table_ks(sorted(summary["base"]["pass_at_k"]))
    table = Table(
        title=f"pass@k (%) over {summary['num_problems']} problems, n = {summary['n']} samples each",
        caption=f"ΔSE = base pass@{summary['k_max']} - checkpoint pass@1 (points; smaller is better)",
    )
    table.add_column("model", no_wrap=True)
    table.add_column("step", justify="right")
    for k in ks:
        table.add_column(f"pass@{k}", justify="right")
    table.add_column("ΔSE", justify="right")

    base = summary["base"]
    table.add_row(base["model"], "-", *(f"{100 * base['pass_at_k'][k]:.1f}" for k in ks), "-", style="bold")
    for ckpt in summary["checkpoints"]:
        table.add_row(
            ckpt["model"],
            str(ckpt["step"]),
            *(f"{100 * ckpt['pass_at_k'][k]:.1f}" for k in ks),
            f"{100 * ckpt['delta_se']:+.1f}",
        )
    return table


def print_table(summary: Summary, console: Console | None = None) -> None:
    """Print ``format_table(summary)`` to ``console`` (a new stdout console if None)."""
    (console or Console()).print(format_table(summary))
