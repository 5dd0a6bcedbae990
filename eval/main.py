"""``rlvr-eval run_dir=<run>``: pass@k of the base model and every checkpoint, ΔSE, plots.

The run's resolved config (``run.json``, written by ``rlvr-train``) says which task, base model and
evaluation settings to use; ``key=value`` overrides on the command line apply on top of it.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from eval.sweep import eval_problems, records_path, report, sweep, targets_of
from train.config import RunConfig, register_configs
from train.tracking import STEP_KEY, Tracker, read_run_info

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


@hydra.main(version_base=None, config_path="../conf", config_name="eval_app")
def _hydra_main(raw: DictConfig) -> None:
    run_dir = Path(raw.run_dir)
    cfg = run_config_with_overrides(run_dir, list(HydraConfig.get().overrides.task))
    sweep_and_report(run_dir, cfg)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
