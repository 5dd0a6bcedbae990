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
from typing_extensions import NotRequired  # typing's own from Python 3.11

from eval.analysis import Overlap, Verdict, accuracy_histogram, mcnemar_p, overlap, subset_ids, verdict
from eval.bootstrap import Resampling, interval, passk_matrix
from eval.passk import powers_of_two_upto
from eval.records import Record


class ModelSummary(TypedDict):
    model: str  # record name, "base" for the base model
    path: str  # model folder
    pass_at_k: dict[int, float]  # k -> pass@k in [0, 1], averaged over problems
    pass_at_k_ci: dict[int, list[float]]  # k -> [lo, hi], bootstrap interval over problems
    accuracy_histogram: list[int]  # problems per accuracy bin (eval.analysis.HISTOGRAM_BINS)


class Difference(TypedDict):
    mean: float  # model pass@k - base pass@k
    ci: list[float]  # [lo, hi], paired bootstrap


class CheckpointSummary(ModelSummary):
    step: int | None  # training step; None for a model that is not a checkpoint of a run (rlvr-eval models=...)
    delta_se: float  # base pass@k_max - this checkpoint's pass@1 (ΔSE)
    delta_se_ci: list[float]  # [lo, hi], paired bootstrap
    diff_vs_base: dict[int, Difference]  # k -> this model minus the base
    overlap: Overlap  # solvable-problem counts against the base
    mcnemar_p: float  # exact McNemar test of base-only against rl-only problems
    verdict: Verdict  # where the difference is significant, and where the curves cross


class Summary(TypedDict):
    task: str  # the task the problems came from ("" when the records do not say)
    k_max: int  # largest k reported; ΔSE uses the base's pass@k_max
    n: int  # samples per problem, the same for every model
    num_problems: int  # problems every model was measured on
    ci_level: float  # coverage of every interval
    bootstrap_resamples: int  # replicates behind every interval
    bootstrap_seed: int  # seeds the resampling: the same records give the same intervals
    base: ModelSummary
    checkpoints: list[CheckpointSummary]  # ordered by step, then models without a step in sweep order
    subsets: dict[str, dict[str, dict]]  # tag -> value -> summary of those problems alone (no deeper subsets)
    records: NotRequired[str]  # the records file behind it, in <run>/eval/ (written by the sweep)


class SummaryError(ValueError):
    """Records that cannot be summarised as they are; the message says what to fix."""


def summarize(
    records: Iterable[Record], k_max: int | None = None, ci_level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Summary:
    """pass@k of the base model and of every other model, with ΔSE, paired bootstrap intervals,
    overlap counts and verdicts, from per-problem records; per-subset summaries where problems carry tags.

    records: any order; a repeated (model, problem_id) keeps its later record, as read_records does.
    k_max: largest k reported (k = 1, 2, 4, ..., k_max); defaults to n, the samples per problem.
    Every interval resamples problems (the same draw for every model, :mod:`eval.bootstrap`).
    Raises SummaryError unless there is exactly one base model, every model has one n, and every
    model was measured on the base's problems.
    """
    by_model = _group(records)
    base_name = _base_name(by_model)
    n = _common_n(by_model)
    k_max = n if k_max is None else k_max
    if not 1 <= k_max <= n:
        raise SummaryError(f"k_max must be between 1 and n = {n} (samples per problem), got {k_max}")
    problem_ids = _common_problems(by_model, base_name)
    task = next(iter(by_model[base_name].values())).task
    summary = _summary_over(by_model, base_name, problem_ids, n, k_max, ci_level, resamples, seed)
    tags = {pid: by_model[base_name][pid].tags for pid in problem_ids}
    subsets = {
        name: {value: _summary_over(by_model, base_name, sorted(ids), n, k_max, ci_level, resamples, seed)
               for value, ids in values.items()}
        for name, values in subset_ids(tags).items()
    }  # fmt: skip
    return Summary(task=task, **summary, subsets=subsets)  # type: ignore[typeddict-item]


def _summary_over(
    by_model: dict[str, dict[str, Record]], base_name: str, problem_ids: list[str], n: int, k_max: int,
    ci_level: float, resamples: int, seed: int,
) -> dict:
    """The summary's fields (all but task and subsets) over ``problem_ids``."""
    ks = powers_of_two_upto(k_max)
    draw = Resampling.draw(len(problem_ids), resamples, seed)
    correct = {name: np.array([rs[p].correct for p in problem_ids]) for name, rs in by_model.items()}
    values = {name: passk_matrix(np.full(len(problem_ids), n), c, ks) for name, c in correct.items()}  # (P, K)
    replicates = {name: draw.means(v) for name, v in values.items()}  # (B, K)

    def curve(name: str) -> dict:
        lo, hi = interval(replicates[name], ci_level)
        first = by_model[name][problem_ids[0]]
        return {"model": name, "path": first.path, "pass_at_k": dict(zip(ks, values[name].mean(0).tolist())),
                "pass_at_k_ci": {k: [float(a), float(b)] for k, a, b in zip(ks, lo, hi)},
                "accuracy_histogram": accuracy_histogram(np.full(len(problem_ids), n), correct[name])}  # fmt: skip

    base = curve(base_name)
    others = []
    for name in by_model:
        if name == base_name:
            continue
        diff = replicates[name] - replicates[base_name]  # (B, K), paired
        diff_mean = values[name].mean(0) - values[base_name].mean(0)
        lo, hi = interval(diff, ci_level)
        gap = replicates[base_name][:, -1] - replicates[name][:, 0]  # ΔSE per replicate
        counts = overlap(correct[base_name], correct[name])
        others.append({
            **curve(name), "step": by_model[name][problem_ids[0]].step,
            "delta_se": float(base["pass_at_k"][k_max] - values[name][:, 0].mean()),
            "delta_se_ci": [float(x) for x in interval(gap, ci_level)],
            "diff_vs_base": {k: {"mean": float(m), "ci": [float(a), float(b)]} for k, m, a, b in zip(ks, diff_mean, lo, hi)},
            "overlap": counts, "mcnemar_p": mcnemar_p(counts),
            "verdict": verdict(name, ks, diff_mean, diff, ci_level),
        })  # fmt: skip
    order = {name: i for i, name in enumerate(by_model)}
    others.sort(key=lambda c: (c["step"] is None, c["step"] or 0, order[c["model"]]))
    return {"k_max": k_max, "n": n, "num_problems": len(problem_ids), "ci_level": ci_level,
            "bootstrap_resamples": resamples, "bootstrap_seed": seed, "base": base, "checkpoints": others}  # fmt: skip


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
    """The model named "base", else the one model whose records have step None (older sweeps)."""
    if "base" in by_model:
        return "base"
    bases = sorted(name for name, rs in by_model.items() if next(iter(rs.values())).step is None)
    if len(bases) != 1:
        checkpoints = sorted(set(by_model) - set(bases))
        raise SummaryError(
            f"ΔSE needs exactly one base model (named 'base', or the one with step None), found {len(bases)}: {bases}; "
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


def write_summary(summary: Summary, path: str | Path) -> Path:
    """Write ``summary`` as indented JSON (its int k keys become strings) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_summary(path: str | Path) -> Summary:
    """Read a summary written by ``write_summary``, turning the per-k keys back into ints."""
    summary = json.loads(Path(path).read_text(encoding="utf-8"))
    for part in [summary, *(s for values in summary.get("subsets", {}).values() for s in values.values())]:
        for model in [part["base"], *part["checkpoints"]]:
            for key in ("pass_at_k", "pass_at_k_ci", "diff_vs_base"):
                if key in model:
                    model[key] = {int(k): v for k, v in model[key].items()}
    return summary


def table_ks(ks: list[int], max_columns: int = 5) -> list[int]:
    """The k shown in the table: all of them if they fit, else every 2nd (1, 4, 16, ...) or
    sparser power of two, always ending with k_max, so a 100-column terminal holds the table.

    >>> table_ks([1, 2, 4, 8])
    [1, 2, 4, 8]
    >>> table_ks([1, 2, 4, 8, 16, 32, 64, 128, 256])
    [1, 4, 16, 64, 256]
    >>> table_ks([1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
    [1, 8, 64, 512]
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
    """One row per model (base first, then checkpoints by step): pass@k in % and ΔSE in points, each with
    its interval beneath it. Checkpoint names carry their step."""
    ks = table_ks(sorted(summary["base"]["pass_at_k"]))
    table = Table(
        title=f"pass@k (%) over {summary['num_problems']} problems, n = {summary['n']} samples each",
        caption=f"{problem_scale(summary)}; \\[lo, hi]: {ci_words(summary)}\n"
        f"ΔSE = base pass@{summary['k_max']} - checkpoint pass@1 (points; smaller is better)",
    )
    table.add_column("model", no_wrap=True)
    for k in ks:
        table.add_column(f"pass@{k}", justify="right", no_wrap=True)
    table.add_column("ΔSE", justify="right", no_wrap=True)

    base = summary["base"]
    table.add_row(base["model"], *(format_cell(base["pass_at_k"][k], base["pass_at_k_ci"][k]) for k in ks), "-", style="bold")
    for ckpt in summary["checkpoints"]:
        table.add_row(
            ckpt["model"],
            *(format_cell(ckpt["pass_at_k"][k], ckpt["pass_at_k_ci"][k]) for k in ks),
            format_cell(ckpt["delta_se"], ckpt["delta_se_ci"], signed=True),
        )
    return table


def format_overlap(summary: Summary) -> Table:
    """Solvable problems (at least one correct sample of n) of each model against the base, with McNemar's p."""
    table = Table(title=f"Problems solved at n = {summary['n']} (of {summary['num_problems']})",
                  caption="McNemar: exact test of base-only against model-only problems")  # fmt: skip
    for column in ("model", "both", "base only", "model only", "neither", "McNemar p"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for ckpt in summary["checkpoints"]:
        o = ckpt["overlap"]
        table.add_row(ckpt["model"], str(o["both"]), str(o["base_only"]), str(o["rl_only"]), str(o["neither"]),
                      f"{ckpt['mcnemar_p']:.3g}")  # fmt: skip
    return table


def verdict_lines(summary: Summary) -> list[str]:
    """One verdict line per checkpoint (``eval.analysis.verdict``)."""
    return [ckpt["verdict"]["text"] for ckpt in summary["checkpoints"]]


def format_cell(value: float, ci: list[float], signed: bool = False) -> str:
    """A figure in % (points when signed) with its interval on the line beneath, dimmed and in whole
    points (its ends are themselves uncertain by about a problem's worth)."""
    sign = "+" if signed else ""
    return f"{100 * value:{sign}.1f}\n[dim]\\[{100 * ci[0]:{sign}.0f}, {100 * ci[1]:{sign}.0f}][/dim]"


def problem_scale(summary: Summary) -> str:
    """E.g. "40 problems; one problem = 2.5 points"."""
    return f"{summary['num_problems']} problems; {one_problem(summary)}"


def one_problem(summary: Summary) -> str:
    """What one problem more or less moves a figure, e.g. "one problem = 2.5 points"."""
    points = 100 / summary["num_problems"]
    return f"one problem = {points:.3g} point{'' if points == 1 else 's'}"


def ci_words(summary: Summary) -> str:
    return (f"{100 * summary['ci_level']:g}% paired bootstrap over problems "
            f"({summary['bootstrap_resamples']} resamples, seed {summary['bootstrap_seed']})")  # fmt: skip


def output_console() -> Console:
    """stdout; when it is not a terminal (a log file, a pipe), 120 columns rather than rich's 80, so that
    tables with intervals are written whole instead of cut."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


def print_table(summary: Summary, console: Console | None = None) -> None:
    """The pass@k table, the verdicts and the overlap table, to ``console`` (:func:`output_console` if None)."""
    console = console or output_console()
    console.print(format_table(summary))
    if summary["checkpoints"]:
        console.print("Verdicts (model - base, per k):")
        for line in verdict_lines(summary):
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        console.print(format_overlap(summary))
