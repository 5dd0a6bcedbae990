"""``rlvr-eval run_dir=<run>``: pass@k of the base model and every checkpoint, ΔSE, plots.

Pointed at a multirun folder (``rlvr-train -m algorithm=ppo,grpo,...``), it sweeps every run in
it and adds the cross-algorithm table (``comparison.json``) and plot (``comparison.png``).

The run's resolved config (``run.json``, written by ``rlvr-train``) says which task, base model and
evaluation settings to use; ``key=value`` overrides on the command line apply on top of it.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from eval.compare import compare, print_comparison, write_comparison
from eval.plot import plot_comparison
from eval.sweep import eval_problems, records_path, report, sweep, targets_of
from train.config import RunConfig, register_configs
from train.tracking import RUN_INFO, Tracker, read_run_info

register_configs()


def sweep_and_report(run_dir: Path, cfg: RunConfig, progress: bool = True) -> dict:
    """Sweep base + checkpoints, write ``<run_dir>/eval/``, log pass@k at each checkpoint's step."""
    torch.set_num_threads(cfg.trainer.threads)
    info = read_run_info(run_dir)
    records = sweep(records_path(run_dir, cfg.eval), targets_of(run_dir, info["base_model"]),
                    eval_problems(cfg), cfg, progress=progress)
    summary = report(run_dir, records, k_max=cfg.eval.k_max)
    _log(run_dir, cfg, info["config"], summary)
    return summary


def _log(run_dir: Path, cfg: RunConfig, run_config: dict, summary: dict) -> None:
    tracker = Tracker(run_dir, cfg.logger, run_config, name=Path(run_dir).name)
    k_max = summary["k_max"]
    base = summary["base"]["pass_at_k"]
    for ckpt in summary["checkpoints"]:
        tracker.log(
            {
                "eval/pass@1": ckpt["pass_at_k"][1],
                f"eval/pass@{k_max}": ckpt["pass_at_k"][k_max],
                "eval/delta_se": ckpt["delta_se"],
                "eval/base_pass@1": base[1],
                f"eval/base_pass@{k_max}": base[k_max],
            },
            step=ckpt["step"],
        )
    eval_dir = Path(run_dir) / "eval"
    last = summary["checkpoints"][-1]["step"] if summary["checkpoints"] else 0
    tracker.log_image("eval/passk_curves", eval_dir / "passk_curves.png", step=last)
    tracker.log_image("eval/passk_over_steps", eval_dir / "passk_over_steps.png", step=last)
    tracker.finish()


def run_config_with_overrides(run_dir: Path, overrides: list[str]) -> RunConfig:
    """The run's saved config, then the command line's ``key=value`` overrides (run_dir aside)."""
    saved = OmegaConf.merge(OmegaConf.structured(RunConfig), read_run_info(run_dir)["config"])
    extra = [o for o in overrides if not o.startswith("run_dir=")]
    return OmegaConf.to_object(OmegaConf.merge(saved, OmegaConf.from_dotlist(extra)))


def runs_in(folder: Path) -> list[Path]:
    """``folder`` itself if it is a run, else the runs directly inside it (a Hydra multirun)."""
    if (folder / RUN_INFO).exists():
        return [folder]
    runs = sorted(path.parent for path in folder.glob(f"*/{RUN_INFO}"))
    if not runs:
        raise FileNotFoundError(f"{folder} holds no run written by rlvr-train (no {RUN_INFO} in it or its subfolders)")
    return runs


def compare_runs(folder: Path, runs: list[Path], overrides: list[str]) -> dict:
    """Sweep every run (resuming finished sweeps costs nothing), then the cross-algorithm table and plot."""
    summaries = {}
    for run in runs:
        cfg = run_config_with_overrides(run, overrides)
        name = cfg.algorithm.name if cfg.algorithm.name not in summaries else run.name
        summaries[name] = sweep_and_report(run, cfg)
    comparison = compare(summaries)
    write_comparison(comparison, folder / "comparison.json")
    print_comparison(comparison)
    plot_comparison(comparison, folder / "comparison.png")
    return comparison


@hydra.main(version_base=None, config_path="../conf", config_name="eval_app")
def _hydra_main(raw: DictConfig) -> None:
    folder = Path(raw.run_dir)
    overrides = list(HydraConfig.get().overrides.task)
    runs = runs_in(folder)
    if runs == [folder]:
        sweep_and_report(folder, run_config_with_overrides(folder, overrides))
    else:
        compare_runs(folder, runs, overrides)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
