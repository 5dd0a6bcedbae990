"""One Markdown report for a run or a multirun: every table with its intervals, the verdicts and the figures.

``report.md`` sits in the folder it describes and links its PNGs by relative paths, so the folder
is the report (copy it anywhere, open it in any Markdown viewer). It is built from what the
evaluation wrote (``eval/summary.json``, ``perplexity.json``, ``comparison.json``, the PNGs) and
never samples. Sections follow Yue et al. 2025 (arXiv 2504.13837): Table 2 (pass@k with intervals),
the pass@k curves (Fig. 1-2, 8), pass@1 and pass@k_max over training (Fig. 1 right, Table 3), the
accuracy histograms (Fig. 5), the solvable-problem overlap (Tables 4-5), response perplexity
(Fig. 6), distillation beside RL (Fig. 7) and the verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from eval.compare import load_comparison
from eval.figures import plot_perplexity
from eval.summarize import ci_words, load_summary, problem_scale, table_ks

REPORT = "report.md"


def write_report(folder: Path) -> Path:
    """``<folder>/report.md`` for a run (it has ``run.json``) or a multirun (it has ``comparison.json``)."""
    folder = Path(folder)
    if (folder / "comparison.json").exists():
        lines = _multirun_report(folder)
    else:
        lines = _run_report(folder, heading="#")
    path = folder / REPORT
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


# --- one run ------------------------------------------------------------------------------------


def _run_report(folder: Path, heading: str) -> list[str]:
    info = json.loads((folder / "run.json").read_text())
    config = info["config"]
    ev = config.get("eval", {})
    main = load_summary(folder / "eval" / "summary.json")
    trained = any(c["step"] is not None for c in main["checkpoints"])
    what = (f"algorithm `{config.get('algorithm', {}).get('name', '-')}`, seed {config.get('seed', 0)}" if trained
            else "no training: " + (", ".join(f"`{c['model']}` (`{c['path']}`)" for c in main["checkpoints"]) or "the base alone")
            + " against it")  # fmt: skip
    lines = [f"{heading} {folder.name}", "",
             f"Base model `{info['base_model']}`; {what}. "
             f"Sampling for pass@k: n = {main['n']}, temperature {ev.get('temperature')}, top-p {ev.get('top_p')}, "
             f"up to {ev.get('max_new_tokens')} new tokens. {_ci_sentence(main)}", ""]  # fmt: skip
    tasks = [("eval", main)] + [(f"eval/tasks/{p.parent.name}", load_summary(p))
                                for p in sorted((folder / "eval" / "tasks").glob("*/summary.json"))]  # fmt: skip
    for where, summary in tasks:
        lines += _task_section(folder, where, summary, heading + "#")
    return lines


def _task_section(folder: Path, where: str, summary: dict, heading: str) -> list[str]:
    name = summary.get("task") or "task"
    lines = [f"{heading} {name}: pass@k", "", _scale_sentence(summary), ""]
    lines += _passk_table(summary)
    lines += ["", "Verdicts (each model minus the base, per k; marginal intervals, one per k):", ""]
    lines += [f"- {c['verdict']['text']}" for c in summary["checkpoints"]] or ["- no model besides the base"]
    lines += ["", _figure(where, "passk_curves.png", "pass@k curves with intervals")]
    steps = [c for c in summary["checkpoints"] if c["step"] is not None]
    if steps:
        lines += ["", f"{heading} {name}: over training (Table 3)", "", *_steps_table(summary, steps), "",
                  _figure(where, "passk_over_steps.png", "pass@1 and pass@k_max over training")]  # fmt: skip
    if summary["checkpoints"]:
        lines += ["", f"{heading} {name}: solvable problems (Tables 4-5)", "", *_overlap_table(summary)]
    lines += ["", f"{heading} {name}: per-problem accuracy (Fig. 5)", "",
              _figure(where, "accuracy_histograms.png", "accuracy histograms")]  # fmt: skip
    for tag, values in summary.get("subsets", {}).items():
        lines += ["", f"{heading} {name}: by {tag}", "", *_subset_table(tag, values)]
    perplexity = folder / where / "perplexity.json"
    if perplexity.exists():
        lines += ["", f"{heading} {name}: perplexity of responses (Fig. 6)", "",
                  *_perplexity_table(json.loads(perplexity.read_text())["models"]), "",
                  _figure(where, "perplexity.png", "perplexity of responses")]  # fmt: skip
    return lines + [""]


def _passk_table(summary: dict) -> list[str]:
    ks = table_ks(sorted(summary["base"]["pass_at_k"]))
    rows = [["model", "step", *(f"pass@{k}" for k in ks), "ΔSE"]]
    base = summary["base"]
    rows.append([f"**{base['model']}**", "-", *(_pct(base["pass_at_k"][k], base["pass_at_k_ci"][k]) for k in ks), "-"])
    for c in summary["checkpoints"]:
        rows.append([c["model"], _step(c), *(_pct(c["pass_at_k"][k], c["pass_at_k_ci"][k]) for k in ks),
                     _pct(c["delta_se"], c["delta_se_ci"], signed=True)])  # fmt: skip
    return _markdown(rows)


def _steps_table(summary: dict, steps: list[dict]) -> list[str]:
    k = summary["k_max"]
    rows = [["step", "pass@1", f"pass@{k}", f"pass@{k} - base", "ΔSE"]]
    for c in steps:
        diff = c["diff_vs_base"][k]
        rows.append([str(c["step"]), _pct(c["pass_at_k"][1], c["pass_at_k_ci"][1]), _pct(c["pass_at_k"][k], c["pass_at_k_ci"][k]),
                     _pct(diff["mean"], diff["ci"], signed=True), _pct(c["delta_se"], c["delta_se_ci"], signed=True)])  # fmt: skip
    return _markdown(rows)


def _overlap_table(summary: dict) -> list[str]:
    rows = [["model", "both", "base only", "model only", "neither", "McNemar p"]]
    for c in summary["checkpoints"]:
        o = c["overlap"]
        rows.append([c["model"], str(o["both"]), str(o["base_only"]), str(o["rl_only"]), str(o["neither"]), f"{c['mcnemar_p']:.3g}"])
    return [f"Solved = at least one correct sample of n = {summary['n']}, of {summary['num_problems']} problems; "
            "McNemar: exact test of base-only against model-only problems.", "", *_markdown(rows)]  # fmt: skip


def _subset_table(tag: str, values: dict[str, dict]) -> list[str]:
    rows = [[tag, "problems", "model", "pass@1", "pass@k_max", "pass@k_max - base"]]
    for value, part in values.items():
        k = part["k_max"]
        rows.append([value, str(part["num_problems"]), "base", _pct(part["base"]["pass_at_k"][1], part["base"]["pass_at_k_ci"][1]),
                     _pct(part["base"]["pass_at_k"][k], part["base"]["pass_at_k_ci"][k]), "-"])  # fmt: skip
        for c in part["checkpoints"]:
            diff = c["diff_vs_base"][k]
            rows.append(["", "", c["model"], _pct(c["pass_at_k"][1], c["pass_at_k_ci"][1]),
                         _pct(c["pass_at_k"][k], c["pass_at_k_ci"][k]), _pct(diff["mean"], diff["ci"], signed=True)])  # fmt: skip
    return _markdown(rows)


def _perplexity_table(models: dict[str, dict]) -> list[str]:
    rows = [["responses of", "under the base: median [q25, q75]", "under itself: median [q25, q75]", "responses"]]
    for name, scorers in models.items():
        cells = [_quartiles(scorers.get(s)) for s in ("under_base", "under_self")]
        rows.append([name, *cells, str(scorers.get("under_base", {}).get("count", 0))])
    return ["Perplexity of each model's kept responses (temperature 1), scored by the base and by the model "
            "that wrote them; low under the base means the base would have written them too.", "", *_markdown(rows)]  # fmt: skip


# --- a multirun ---------------------------------------------------------------------------------


def _multirun_report(folder: Path) -> list[str]:
    comparison = load_comparison(folder / "comparison.json")
    k = comparison["k_max"]
    runs = [folder / run for g in comparison["groups"] for run in g["runs"]]
    lines = [f"# {folder.name}", "",
             f"{len(runs)} runs from one base (`{comparison['base']['path']}`), grouped by what the multirun swept "
             "(seeds of one configuration pooled). " + _ci_sentence(comparison), "",
             f"## Comparison (Table 2): {comparison.get('task') or 'task'}", "", _scale_sentence(comparison), "",
             *_comparison_table(comparison), "", "Verdicts (each group minus the base, per k):", "",
             *(f"- {g['verdict']['text']}" for g in comparison["groups"]), "",
             _figure(".", "comparison.png", "pass@k by configuration"), "",
             "## Over training (Table 3, Fig. 1 right)", "", *_group_steps_table(comparison), "",
             _figure(".", "comparison_over_steps.png", "pass@1 and pass@k_max over training"), ""]  # fmt: skip
    single = [g for g in comparison["groups"] if "overlap" in g]
    if single:
        rows = [["group", "both", "base only", "model only", "neither", "McNemar p"]]
        rows += [[g["label"], *(str(g["overlap"][key]) for key in ("both", "base_only", "rl_only", "neither")),
                  f"{g['mcnemar_p']:.3g}"] for g in single]  # fmt: skip
        lines += ["## Solvable problems (Tables 4-5)", "", f"At n = {comparison['n']}, last checkpoints, single-seed groups.", "",
                  *_markdown(rows), ""]  # fmt: skip
    for tag, values in comparison.get("subsets", {}).items():
        lines += [f"## By {tag}", "", *_group_subset_table(tag, values), ""]
    perplexity = _group_perplexity(folder, comparison)
    if perplexity:
        plot_perplexity(perplexity, folder / "perplexity.png")
        lines += ["## Perplexity of responses (Fig. 6, Fig. 7)", "", *_perplexity_table(perplexity), "",
                  _figure(".", "perplexity.png", "perplexity of responses by group"), ""]  # fmt: skip
    lines += [f"## Boundary at k = {k}", "", *(_boundary_line(g, k) for g in comparison["groups"]), "",
              "## Runs", "", *(f"- [{run.name}]({run.name}/{REPORT})" for run in runs if (run / REPORT).exists()), ""]
    return lines


def _comparison_table(comparison: dict) -> list[str]:
    k = comparison["k_max"]
    rows = [["model", "step", "seeds", "pass@1", f"pass@{k}", "ΔSE"]]
    base = comparison["base"]
    rows.append(["**base**", "-", "-", _pct(base["pass_at_k"][1], base["pass_at_k_ci"][1]), _pct(base["pass_at_k"][k], base["pass_at_k_ci"][k]), "-"])
    for g in comparison["groups"]:
        rows.append([g["label"], str(g["step"]), str(len(g["seeds"])), _pct(g["pass_at_k"][1], g["pass_at_k_ci"][1]),
                     _pct(g["pass_at_k"][k], g["pass_at_k_ci"][k]), _pct(g["delta_se"], g["delta_se_ci"], signed=True)])  # fmt: skip
    return _markdown(rows)


def _group_steps_table(comparison: dict) -> list[str]:
    k = comparison["k_max"]
    rows = [["group", "step", "pass@1", f"pass@{k}", f"pass@{k} - base"]]
    for g in comparison["groups"]:
        for r in g["over_steps"]:
            diff = r["diff_vs_base"][k]
            rows.append([g["label"], str(r["step"]), _pct(r["pass_at_k"][1], r["pass_at_k_ci"][1]),
                         _pct(r["pass_at_k"][k], r["pass_at_k_ci"][k]), _pct(diff["mean"], diff["ci"], signed=True)])  # fmt: skip
    return _markdown(rows)


def _group_subset_table(tag: str, values: dict[str, dict]) -> list[str]:
    rows = [[tag, "problems", "model", "pass@1", "pass@k_max", "pass@k_max - base"]]
    for value, part in values.items():
        k = max(part["base"]["pass_at_k"])
        base = part["base"]
        rows.append([value, str(part["num_problems"]), "base", _pct(base["pass_at_k"][1], base["pass_at_k_ci"][1]),
                     _pct(base["pass_at_k"][k], base["pass_at_k_ci"][k]), "-"])  # fmt: skip
        for g in part["groups"]:
            diff = g["diff_vs_base"][k]
            rows.append(["", "", g["label"], _pct(g["pass_at_k"][1], g["pass_at_k_ci"][1]),
                         _pct(g["pass_at_k"][k], g["pass_at_k_ci"][k]), _pct(diff["mean"], diff["ci"], signed=True)])  # fmt: skip
    return _markdown(rows)


def _group_perplexity(folder: Path, comparison: dict) -> dict[str, dict]:
    """The base's responses and each group's last-checkpoint responses (its first seed), from the runs' tables."""
    table: dict[str, dict] = {}
    for g in comparison["groups"]:
        path = folder / g["runs"][0] / "eval" / "perplexity.json"
        if not path.exists():
            continue
        models = json.loads(path.read_text())["models"]
        table.setdefault("base", models.get("base", {}))
        last = f"step_{g['step']:06d}"
        if last in models:
            table[g["label"]] = models[last]
    return table if len(table) > 1 else {}


def _boundary_line(group: dict, k: int) -> str:
    diff = group["diff_vs_base"][k]
    lo, hi = diff["ci"]
    if lo > 0:
        word = "wider than the base's (significant)"
    elif hi < 0:
        word = "narrower than the base's (significant)"
    else:
        word = "not distinguishable from the base's"
    return f"- {group['label']}: pass@{k} - base = {_pct(diff['mean'], diff['ci'], signed=True)} points: {word}"


# --- formatting ---------------------------------------------------------------------------------


def _pct(value: float, ci: Iterable[float], signed: bool = False) -> str:
    """E.g. "34.4 [29.1, 39.8]" (percent or points); intervals to one decimal here, where width is free."""
    lo, hi = ci
    sign = "+" if signed else ""
    return f"{100 * value:{sign}.1f} [{100 * lo:{sign}.1f}, {100 * hi:{sign}.1f}]"


def _quartiles(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("median") is None:
        return "-"
    return f"{entry['median']:.3g} [{entry['q25']:.3g}, {entry['q75']:.3g}]"


def _step(c: dict) -> str:
    return "-" if c["step"] is None else str(c["step"])


def _scale_sentence(summary: dict) -> str:
    return f"{problem_scale(summary)}. Figures in %, [lo, hi] beside each."


def _ci_sentence(summary: dict) -> str:
    return f"Intervals: {ci_words(summary)}, percentile, paired across models."


def _figure(where: str, png: str, alt: str) -> str:
    return f"![{alt}]({where}/{png})" if where != "." else f"![{alt}]({png})"


def _markdown(rows: list[list[str]]) -> list[str]:
    header, *body = rows
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in body)]  # fmt: skip

