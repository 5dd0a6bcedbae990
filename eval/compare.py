"""Several runs from one base (a Hydra multirun) -> the paper's Table 2 with intervals, grouped by what was swept.

A multirun is grouped by the overrides that differ between its jobs (``.hydra/overrides.yaml``:
``algorithm=grpo``, ``algorithm.kl_coef=0.01``, ...), the seed aside: jobs that differ only in
``seed`` are seeds of one configuration, and their mean gets a two-level bootstrap interval (seeds,
then problems; :mod:`eval.bootstrap`). Every group is compared with the shared base on the same
problem draws, so differences stay paired. Reads each run's ``eval/summary.json`` and records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from eval.analysis import mcnemar_p, overlap, subset_ids, verdict
from eval.bootstrap import Resampling, interval, passk_matrix, seed_draws, two_level_means
from eval.passk import powers_of_two_upto
from eval.records import Record, read_records
from eval.summarize import Summary, SummaryError, ci_words, format_cell, output_console, problem_scale

SEED_KEYS = ("seed",)  # overrides that make seeds of one configuration, not configurations


@dataclass(frozen=True)
class RunResult:
    """One run of a multirun, as its evaluation left it."""

    folder: Path
    overrides: tuple[str, ...]  # its Hydra overrides (.hydra/overrides.yaml), or () when it has none
    seed: int
    summary: Summary  # the main task's
    records: tuple[Record, ...]  # the main task's, as the summary read them


def load_run(folder: Path) -> RunResult:
    """A run's overrides, seed, main summary and the records behind it."""
    summary = json.loads((folder / "eval" / "summary.json").read_text())
    overrides_file = folder / ".hydra" / "overrides.yaml"
    overrides = tuple(OmegaConf.to_container(OmegaConf.load(overrides_file))) if overrides_file.exists() else ()
    config = json.loads((folder / "run.json").read_text())["config"]
    records = read_records(folder / "eval" / summary["records"]) if "records" in summary else []
    return RunResult(folder, overrides, int(config.get("seed", 0)), summary, tuple(records))


def group_runs(runs: list[RunResult]) -> dict[str, list[RunResult]]:
    """Runs by the overrides that differ between them, seeds aside: label -> runs (seeds of one configuration).

    A run without overrides is labelled by its folder's name. Labels keep the multirun's order.
    """
    differing = _differing_keys(runs)
    groups: dict[str, list[RunResult]] = {}
    for run in runs:
        parts = [o for o in run.overrides if o.split("=", 1)[0].lstrip("+~") in differing]
        label = " ".join(parts) if parts else run.folder.name
        groups.setdefault(label, []).append(run)
    return groups


def _differing_keys(runs: list[RunResult]) -> set[str]:
    """Override keys whose values are not the same in every run, the seed keys left out."""
    values: dict[str, set[str]] = {}
    for run in runs:
        for override in run.overrides:
            key, _, value = override.partition("=")
            values.setdefault(key.lstrip("+~"), set()).add(value)
    every = [dict(o.lstrip("+~").partition("=")[::2] for o in run.overrides) for run in runs]
    return {key for key, seen in values.items() if key not in SEED_KEYS and (len(seen) > 1 or any(key not in e for e in every))}


def compare(runs: list[RunResult], ci_level: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The base and every group's last checkpoint (and its steps) with intervals against the base; the
    same per tag value where problems carry tags (``subsets``).

    Raises SummaryError unless every run swept the same base on the same problems at the same n.
    """
    if not runs:
        raise SummaryError("no runs to compare: point rlvr-eval at a multirun folder holding finished runs")
    base, problem_ids, n, k_max = _shared_base(runs)
    groups = group_runs(runs)
    for label, members in groups.items():
        if not set.intersection(*(set(_checkpoint_steps(run)) for run in members)):
            raise SummaryError(f"{label}: its runs share no evaluated checkpoint step; train and sweep them first")
    over = lambda ids: _compare_over(groups, ids, base, n, k_max, ci_level, resamples, seed)  # noqa: E731
    tags = {r.problem_id: r.tags for r in runs[0].records if r.model == "base"}
    return {
        "task": runs[0].summary.get("task", ""), "k_max": k_max, "n": n, "ci_level": ci_level,
        "bootstrap_resamples": resamples, "bootstrap_seed": seed, **over(problem_ids),
        "subsets": {name: {value: over(sorted(ids)) for value, ids in values.items()} for name, values in subset_ids(tags).items()},
    }  # fmt: skip


def _compare_over(groups: dict[str, list[RunResult]], problem_ids: list[str], base: dict[str, int], n: int, k_max: int,
                  ci_level: float, resamples: int, seed: int) -> dict[str, Any]:  # fmt: skip
    """num_problems, the base and the groups, over ``problem_ids``."""
    ks = powers_of_two_upto(k_max)
    problems = Resampling.draw(len(problem_ids), resamples, seed)
    base_correct = np.array([base[p] for p in problem_ids])
    base_values = passk_matrix(np.full(len(problem_ids), n), base_correct, ks)
    base_reps = problems.means(base_values)
    lo, hi = interval(base_reps, ci_level)
    rows = []
    for label, members in groups.items():
        steps = sorted(set.intersection(*(set(_checkpoint_steps(run)) for run in members)))
        seeds = seed_draws(len(members), resamples, seed)
        per_step = [_group_row(members, step, problem_ids, n, ks, base_correct, base_values, base_reps, problems, seeds,
                               ci_level, label) for step in steps]  # fmt: skip
        rows.append({"label": label, "runs": [r.folder.name for r in members], "seeds": [r.seed for r in members],
                     **per_step[-1], "over_steps": per_step})  # fmt: skip
    first = next(iter(groups.values()))[0]
    return {
        "num_problems": len(problem_ids),
        "base": {"model": "base", "path": first.summary["base"]["path"], "pass_at_k": dict(zip(ks, base_values.mean(0).tolist())),
                 "pass_at_k_ci": {k: [float(a), float(b)] for k, a, b in zip(ks, lo, hi)}},
        "groups": rows,
    }  # fmt: skip


def _group_row(members, step, problem_ids, n, ks, base, base_values, base_reps, problems, seeds, ci_level, label) -> dict:
    """One group at one step: mean over its seeds, two-level intervals, paired with the base."""
    correct = np.stack([_correct_at(run, step, problem_ids) for run in members])  # (S, P)
    values = np.stack([passk_matrix(np.full(len(problem_ids), n), c, ks) for c in correct])  # (S, P, K)
    reps = two_level_means(values, problems, seeds)  # (B, K)
    mean = values.mean(axis=(0, 1))
    diff, diff_mean = reps - base_reps, mean - base_values.mean(0)
    lo, hi = interval(reps, ci_level)
    dlo, dhi = interval(diff, ci_level)
    row = {
        "step": step, "pass_at_k": dict(zip(ks, mean.tolist())),
        "pass_at_k_ci": {k: [float(a), float(b)] for k, a, b in zip(ks, lo, hi)},
        "diff_vs_base": {k: {"mean": float(m), "ci": [float(a), float(b)]} for k, m, a, b in zip(ks, diff_mean, dlo, dhi)},
        "delta_se": float(base_values[:, -1].mean() - mean[0]),
        "delta_se_ci": [float(x) for x in interval(base_reps[:, -1] - reps[:, 0], ci_level)],
        "verdict": verdict(f"{label} (step {step})", ks, diff_mean, diff, ci_level),
    }  # fmt: skip
    if len(members) == 1:  # solvable-problem overlap is a property of one model, not of a mean over seeds
        row["overlap"] = overlap(base, correct[0])
        row["mcnemar_p"] = mcnemar_p(row["overlap"])
    return row


def _shared_base(runs: list[RunResult]) -> tuple[dict[str, int], list[str], int, int]:
    """The base's per-problem correct counts, the problem ids, n and k_max every run shares."""
    first = runs[0]
    for run in runs:
        if not run.records:
            raise SummaryError(f"{run.folder}: its summary names no records file; sweep it again with rlvr-eval")
        for key in ("n", "k_max", "num_problems", "task"):
            if run.summary.get(key) != first.summary.get(key):
                raise SummaryError(f"runs {first.folder.name} and {run.folder.name} differ in {key} "
                                   f"({first.summary.get(key)} vs {run.summary.get(key)}); sweep them alike")  # fmt: skip
    bases = [{r.problem_id: r for r in run.records if r.model == "base"} for run in runs]
    problem_ids = sorted(bases[0])
    for run, found in zip(runs, bases):
        if sorted(found) != problem_ids or any(found[p].path != bases[0][p].path or found[p].correct != bases[0][p].correct
                                               for p in problem_ids):  # fmt: skip
            raise SummaryError(f"runs {first.folder.name} and {run.folder.name} measured different base models or "
                               "problems; compare runs of one base only")  # fmt: skip
    base = {p: bases[0][p].correct for p in problem_ids}
    return base, problem_ids, int(first.summary["n"]), int(first.summary["k_max"])


def _checkpoint_steps(run: RunResult) -> list[int]:
    return [c["step"] for c in run.summary["checkpoints"] if c["step"] is not None]


def _correct_at(run: RunResult, step: int, problem_ids: list[str]) -> np.ndarray:
    found = {r.problem_id: r.correct for r in run.records if r.step == step}
    missing = [p for p in problem_ids if p not in found]
    if missing:
        raise SummaryError(f"{run.folder.name}: step {step} lacks records for {len(missing)} problems; finish its sweep")
    return np.array([found[p] for p in problem_ids])


def format_comparison(comparison: dict[str, Any]) -> Table:
    """Rows: the base, then each group's last checkpoint: pass@1, pass@k_max in %, ΔSE in points, with intervals."""
    k = comparison["k_max"]
    table = Table(
        title=f"From one base: {comparison['num_problems']} problems, n = {comparison['n']}"
        + (f" ({comparison['task']})" if comparison.get("task") else ""),
        caption=f"{problem_scale(comparison)}; \\[lo, hi]: {ci_words(comparison)}, two-level over seeds where a row has several\n"
        f"ΔSE = base pass@{k} - pass@1 of the group's last checkpoint (points)",
    )
    for column in ("model", "step", "seeds", "pass@1", f"pass@{k}", "ΔSE"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    base = comparison["base"]
    table.add_row("base", "-", "-", format_cell(base["pass_at_k"][1], base["pass_at_k_ci"][1]),
                  format_cell(base["pass_at_k"][k], base["pass_at_k_ci"][k]), "-", style="bold")  # fmt: skip
    for group in comparison["groups"]:
        table.add_row(group["label"], str(group["step"]), str(len(group["seeds"])),
                      format_cell(group["pass_at_k"][1], group["pass_at_k_ci"][1]), format_cell(group["pass_at_k"][k], group["pass_at_k_ci"][k]),
                      format_cell(group["delta_se"], group["delta_se_ci"], signed=True))  # fmt: skip
    return table


def write_comparison(comparison: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(comparison, indent=2))
    return path


def load_comparison(path: Path) -> dict[str, Any]:
    """Read ``comparison.json``, turning the per-k keys back into ints."""
    comparison = json.loads(Path(path).read_text())
    parts = [comparison, *(part for values in comparison.get("subsets", {}).values() for part in values.values())]
    for part in parts:
        rows = [part["base"], *part["groups"], *(r for g in part["groups"] for r in g["over_steps"])]
        for row in rows:
            for key in ("pass_at_k", "pass_at_k_ci", "diff_vs_base"):
                if key in row:
                    row[key] = {int(k): v for k, v in row[key].items()}
    return comparison


def print_comparison(comparison: dict[str, Any], console: Console | None = None) -> None:
    console = console or output_console()
    console.print(format_comparison(comparison))
    console.print("Verdicts (group - base, per k):")
    for group in comparison["groups"]:
        console.print(f"  {group['verdict']['text']}", highlight=False, soft_wrap=True)
