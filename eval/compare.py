"""Several runs from one base (a Hydra multirun over algorithms) -> the paper's Table 2 and one plot.

Each run's ``eval/summary.json`` gives its final checkpoint's pass@k; the table puts pass@1,
pass@k_max and ΔSE = pass@k_max(base) - pass@1(RL) of every algorithm beside the shared base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from eval.summarize import Summary, SummaryError


def compare(summaries: dict[str, Summary]) -> dict[str, Any]:
    """{"k_max", "n", "num_problems", "base", "runs": [{name, run, step, path, pass_at_k, delta_se}]}.

    ``summaries`` maps a run's name (its algorithm) to its summary. Raises SummaryError unless
    every run swept the same base model at the same n on the same number of problems with the same
    result: rows compared against different bases would be meaningless.
    """
    if not summaries:
        raise SummaryError("no runs to compare: point rlvr-eval at a multirun folder holding finished runs")
    names = list(summaries)
    first = summaries[names[0]]
    for name in names[1:]:
        other = summaries[name]
        for key in ("n", "k_max", "num_problems"):
            if other[key] != first[key]:
                raise SummaryError(f"runs {names[0]} and {name} differ in {key} ({first[key]} vs {other[key]}); sweep them alike")
        if other["base"]["pass_at_k"] != first["base"]["pass_at_k"]:
            raise SummaryError(
                f"runs {names[0]} and {name} measured different base models or problems "
                f"({first['base']['path']} vs {other['base']['path']}); compare runs of one base only"
            )
    k_max = first["k_max"]
    rows = []
    for name, summary in summaries.items():
        if not summary["checkpoints"]:
            raise SummaryError(f"run {name} has no checkpoint in its summary; train it first")
        last = summary["checkpoints"][-1]
        rows.append({"name": name, "step": last["step"], "path": last["path"], "pass_at_k": last["pass_at_k"],
                     "delta_se": last["delta_se"]})
    return {"k_max": k_max, "n": first["n"], "num_problems": first["num_problems"], "base": first["base"], "runs": rows}


def format_comparison(comparison: dict[str, Any]) -> Table:
    """Rows: the base, then each algorithm's final checkpoint; pass@1, pass@k_max in %, ΔSE in points."""
    k = comparison["k_max"]
    table = Table(
        title=f"RL algorithms from one base: {comparison['num_problems']} problems, n = {comparison['n']}",
        caption=f"ΔSE = base pass@{k} - pass@1 of the algorithm's final checkpoint (points)",
    )
    for column in ("model", "step", "pass@1", f"pass@{k}", "ΔSE"):
        table.add_column(column, justify="left" if column == "model" else "right")
    base = comparison["base"]["pass_at_k"]
    table.add_row("base", "-", f"{100 * base[1]:.1f}", f"{100 * base[k]:.1f}", "-", style="bold")
    for row in comparison["runs"]:
        curve = row["pass_at_k"]
        table.add_row(row["name"], str(row["step"]), f"{100 * curve[1]:.1f}", f"{100 * curve[k]:.1f}",
                      f"{100 * row['delta_se']:+.1f}")
    return table


def write_comparison(comparison: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(comparison, indent=2))
    return path


def print_comparison(comparison: dict[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(format_comparison(comparison))
