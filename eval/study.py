"""A run's evaluation: every benchmark (``eval.tasks``), every model (base, checkpoints, ``eval.models``),
the summaries with intervals, the per-problem analyses and their figures, logged at each checkpoint's step.

Layout under ``<run_dir>/eval/``: the records and kept samples of every task (their file names
carry the task and settings); the first task's ``summary.json``, ``perplexity.json`` and PNGs at the
top; every other task's in ``tasks/<name>/``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from eval.perplexity import perplexity_table, read_perplexity, samples_digest, write_perplexity
from eval.figures import plot_accuracy_histograms, plot_perplexity
from eval.plot import plot_over_steps, plot_passk_curves
from eval.records import Record
from eval.report import write_report
from eval.samples import read_samples, samples_path
from eval.summarize import print_table, summarize, write_summary
from eval.sweep import SweepTarget, eval_problems, problem_hash, process_place, records_path, sweep, targets_of
from train.config import ConfigError, RunConfig, TaskConfig
from train.profiling import Stages
from train.tracking import Tracker, read_run_info

CONF = Path(__file__).resolve().parents[1] / "conf"


def eval_tasks(cfg: RunConfig) -> list[TaskConfig]:
    """The tasks to sweep: ``eval.tasks`` (presets, optionally with field overrides), else the run's task.

    A preset named like the run's own task with no overrides is the run's task as configured.
    """
    if not cfg.eval.tasks:
        return [cfg.task]
    tasks = []
    for entry in cfg.eval.tasks:
        fields = dict(entry) if isinstance(entry, dict) or OmegaConf.is_dict(entry) else {"preset": entry}
        preset = str(fields.pop("preset", fields.get("name", "")))
        if preset == cfg.task.name and not fields:
            tasks.append(cfg.task)
            continue
        file = CONF / "task" / f"{preset}.yaml"
        if not file.is_file():
            known = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
            raise ConfigError(f"eval.tasks: no task preset {preset!r}; known: {', '.join(known)}")
        merged = OmegaConf.merge(OmegaConf.structured(TaskConfig), OmegaConf.load(file), fields)
        tasks.append(OmegaConf.to_object(merged))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"eval.tasks names a task twice ({names}); each task's results go in a folder by its name")
    return tasks


def sweep_and_report(run_dir: Path, cfg: RunConfig, progress: bool = True) -> dict | None:
    """Sweep every task, write ``<run_dir>/eval/``, log to the run's tracker; returns the first task's summary.

    In a process group every rank calls it: each samples its share of the sweep, rank 0 alone reports
    (and computes perplexities); the other ranks return None.
    """
    torch.set_num_threads(cfg.trainer.threads)
    rank, _ = process_place()
    info = read_run_info(run_dir)
    targets = targets_of(run_dir, info["base_model"], dict(cfg.eval.models))
    summaries: dict[str, dict] = {}
    stages = Stages(torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu"))
    for i, task in enumerate(eval_tasks(cfg)):
        task_cfg = dataclasses.replace(cfg, task=task)
        out = Path(run_dir) / "eval" / ("" if i == 0 else f"tasks/{task.name}")
        problems = eval_problems(task_cfg, info["base_model"])  # the run's base, whichever task
        records_file = records_path(run_dir, task_cfg)
        with stages("sweep"):
            records = sweep(records_file, targets, problems, task_cfg, progress=progress)
        if rank == 0:
            summaries[task.name] = report(out, records, task_cfg, targets, problems, records_file, progress=progress)
    if rank != 0:
        return None
    _log(run_dir, cfg, info["config"], summaries, stages.metrics())
    print(f"report: {write_report(run_dir)}")
    return next(iter(summaries.values()))


def report(
    out: Path, records: list[Record], cfg: RunConfig, targets: list[SweepTarget], problems, records_file: Path,
    progress: bool = True,
) -> dict:
    """summary.json, the terminal table, perplexity.json and the figures in ``out``."""
    ev = cfg.eval
    summary = summarize(records, k_max=ev.k_max or None, ci_level=ev.ci_level, resamples=ev.bootstrap_resamples,
                        seed=ev.seed)  # fmt: skip
    summary["records"] = records_file.name  # in <run>/eval/, whichever task
    write_summary(summary, out / "summary.json")
    print(f"\n{cfg.task.name}:")
    print_table(summary)
    plot_passk_curves(summary, out / "passk_curves.png")
    plot_over_steps(summary, out / "passk_over_steps.png")
    plot_accuracy_histograms(summary, out / "accuracy_histograms.png")
    samples_file = samples_path(records_file)
    if ev.perplexity and ev.keep_samples and samples_file.exists():
        table = _perplexity(out / "perplexity.json", samples_file, targets, problems, cfg, progress)
        plot_perplexity(table, out / "perplexity.png")
    return summary


def _perplexity(path: Path, samples_file: Path, targets, problems, cfg: RunConfig, progress: bool) -> dict[str, Any]:
    """The perplexity table of the kept samples, computed once per set of samples."""
    hashes = {p.id: problem_hash(p, cfg.task.columns) for p in problems}  # samples of these problems as they are now
    models = {t.model for t in targets}
    samples = [s for s in read_samples(samples_file) if hashes.get(s.problem_id) == s.problem_hash and s.model in models]
    digest = samples_digest(samples)
    stored = read_perplexity(path)
    if stored is None or stored.get("samples_digest") != digest:
        table = perplexity_table({t.model: t.path for t in targets}, "base", samples, problems, cfg, progress=progress)
        write_perplexity(table, path, digest)
        stored = read_perplexity(path)
    return stored["models"]


def _log(run_dir: Path, cfg: RunConfig, run_config: dict, summaries: dict[str, dict], costs: dict[str, float]) -> None:
    """pass@k, ΔSE and their intervals at each checkpoint's step, the curves as tables, the figures as media;
    the sweep's seconds and peak memory (``costs``) at the last step."""
    tracker = Tracker(run_dir, cfg.logger, run_config, name=Path(run_dir).name)
    for i, (task, summary) in enumerate(summaries.items()):
        prefix = "eval" if i == 0 else f"eval/{task}"
        k_max, base = summary["k_max"], summary["base"]
        last_step = max((c["step"] for c in summary["checkpoints"] if c["step"] is not None), default=None)
        for ckpt in summary["checkpoints"]:
            if ckpt["step"] is None:
                continue
            tracker.log({
                f"{prefix}/pass@1": ckpt["pass_at_k"][1], f"{prefix}/pass@1_lo": ckpt["pass_at_k_ci"][1][0],
                f"{prefix}/pass@1_hi": ckpt["pass_at_k_ci"][1][1], f"{prefix}/pass@{k_max}": ckpt["pass_at_k"][k_max],
                f"{prefix}/pass@{k_max}_lo": ckpt["pass_at_k_ci"][k_max][0],
                f"{prefix}/pass@{k_max}_hi": ckpt["pass_at_k_ci"][k_max][1],
                f"{prefix}/delta_se": ckpt["delta_se"], f"{prefix}/delta_se_lo": ckpt["delta_se_ci"][0],
                f"{prefix}/delta_se_hi": ckpt["delta_se_ci"][1],
                f"{prefix}/base_pass@1": base["pass_at_k"][1], f"{prefix}/base_pass@{k_max}": base["pass_at_k"][k_max],
                **(costs if i == 0 and ckpt["step"] == last_step else {}),
            }, step=ckpt["step"])  # fmt: skip
            tracker.log_curve(f"{prefix}/passk_curve", _curve_rows(summary, ckpt),
                              ["k", "model", "pass@k", "lo", "hi"], step=ckpt["step"])  # fmt: skip
        eval_dir = Path(run_dir) / "eval" / ("" if i == 0 else f"tasks/{task}")
        last = max((c["step"] for c in summary["checkpoints"] if c["step"] is not None), default=0)
        for png in sorted(eval_dir.glob("*.png")):
            tracker.log_image(f"{prefix}/{png.stem}", png, step=last)
    tracker.finish()


def _curve_rows(summary: dict, ckpt: dict) -> list[list]:
    """The base's and one checkpoint's pass@k curves with their intervals, as table rows."""
    rows = []
    for model in (summary["base"], ckpt):
        for k, value in sorted(model["pass_at_k"].items()):
            lo, hi = model["pass_at_k_ci"][k]
            rows.append([k, model["model"], value, lo, hi])
    return rows
