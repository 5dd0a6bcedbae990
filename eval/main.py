"""``rlvr-eval run_dir=<run>``: pass@k of the base model and every checkpoint, ΔSE, plots.

Pointed at a multirun folder (``rlvr-train -m algorithm=ppo,grpo,...``), it sweeps every run in
it and adds the cross-algorithm table (``comparison.json``) and plot (``comparison.png``).

The run's resolved config (``run.json``, written by ``rlvr-train``) says which task, base model and
evaluation settings to use; ``key=value`` overrides on the command line apply on top of it.

With ``base_only=true`` and a ``run_dir`` that holds no run yet, it evaluates the model and task given
on the command line (``model=hf model.name_or_path=... task=math500``) without any training: the
paper's base-model pass@k curves. The folder then holds a run of its own, with no checkpoints.

On several processes (``accelerate launch --multi_gpu --num_processes 8 -m eval.main run_dir=...``)
every rank samples its share of the sweep on its own device; rank 0 merges and reports.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from eval.compare import compare, load_run, print_comparison, write_comparison
from eval.plot import plot_comparison, plot_comparison_over_steps
from eval.report import write_report
from eval.study import sweep_and_report
from eval.sweep import barrier, process_place
from eval.summarize import SummaryError
from train.config import ConfigError, EvalConfig, RunConfig, register_configs
from train.distributed import world_size_from_env
from train.errors import DataError
from train.models import resolve_base
from train.tracking import RUN_INFO, read_run_info, write_run_info



@dataclass
class EvalAppConfig(RunConfig):
    base_only: bool = False  # true: evaluate the configured model and task, untrained, into a new run_dir


register_configs()
ConfigStore.instance().store(name="eval_app_schema", node=EvalAppConfig)


class UsageError(ValueError):
    """A command line that cannot work on this folder; the message says what to run instead."""


GROUPS = ("model", "task", "rollout", "logger", "eval", "algorithm", "deepspeed")
# Presets that leave what a run is (its model, task, training) alone and only choose how it is swept or logged.
SWEEP_GROUPS = ("rollout", "logger", "eval")
CONF = Path(__file__).resolve().parents[1] / "conf"


def run_config_with_overrides(run_dir: Path, overrides: list[str]) -> RunConfig:
    """The run's saved config, then the command line's presets of :data:`SWEEP_GROUPS` (``logger=none``,
    ``rollout=vllm``) and ``key=value`` overrides, in that order (run_dir aside)."""
    saved = OmegaConf.merge(OmegaConf.structured(RunConfig), read_run_info(run_dir)["config"])
    extra = [o.lstrip("+") for o in overrides if not o.startswith(("run_dir=", "base_only="))]
    presets = [o for o in extra if o.split("=", 1)[0] in GROUPS]
    refused = [o for o in presets if o.split("=", 1)[0] not in SWEEP_GROUPS]
    if refused:
        raise UsageError(
            f"{run_dir} is a run with its own model and task; presets ({', '.join(refused)}) choose those for a new "
            "evaluation (base_only=true with a new run_dir). Override single fields instead, e.g. eval.n=64"
        )
    for preset in presets:
        group, name = preset.split("=", 1)
        file = CONF / group / f"{name}.yaml"
        if not file.is_file():
            known = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
            raise UsageError(f"{preset}: no such preset; known {group} presets: {', '.join(known)}")
        saved = OmegaConf.merge(saved, {group: OmegaConf.load(file)})
    fields = [o for o in extra if o not in presets]
    return OmegaConf.to_object(OmegaConf.merge(saved, OmegaConf.from_dotlist(fields)))


def new_base_run(run_dir: Path, raw: DictConfig, write: bool = True) -> RunConfig:
    """A run folder for evaluating the configured model as it is: run.json, no checkpoints (``write``)."""
    resolved = OmegaConf.to_container(raw, resolve=True)
    resolved.pop("base_only")
    cfg: RunConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), resolved))
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_info(run_dir, resolve_base(cfg.model, cfg.task), resolved)
    return cfg


def runs_in(folder: Path) -> list[Path]:
    """``folder`` itself if it is a run, else the runs directly inside it (a Hydra multirun)."""
    if (folder / RUN_INFO).exists():
        return [folder]
    runs = sorted(path.parent for path in folder.glob(f"*/{RUN_INFO}"))
    if not runs:
        raise FileNotFoundError(
            f"{folder} holds no run written by rlvr-train (no {RUN_INFO} in it or its subfolders); to evaluate a model "
            "without training, add base_only=true with its model and task (model=hf model.name_or_path=... task=...)"
        )
    return runs


def compare_runs(folder: Path, runs: list[Path], overrides: list[str]) -> dict | None:
    """Sweep every run (resuming finished sweeps costs nothing), then the comparison table, plots and report
    (on rank 0 of a process group; the other ranks only sample their share and return None)."""
    cfg = None
    for run in runs:
        cfg = run_config_with_overrides(run, overrides)
        sweep_and_report(run, cfg)
    if process_place()[0] != 0:
        return None
    return compare_and_report(folder, runs, cfg.eval)


def compare_and_report(folder: Path, runs: list[Path], ev: EvalConfig) -> dict:
    """The comparison of runs already swept: ``comparison.json``, the table, the plots and ``report.md``."""
    comparison = compare([load_run(run) for run in runs], ci_level=ev.ci_level, resamples=ev.bootstrap_resamples,
                         seed=ev.seed)  # fmt: skip
    write_comparison(comparison, folder / "comparison.json")
    print_comparison(comparison)
    plot_comparison(comparison, folder / "comparison.png")
    plot_comparison_over_steps(comparison, folder / "comparison_over_steps.png")
    print(f"report: {write_report(folder)}")
    return comparison


@hydra.main(version_base=None, config_path="../conf", config_name="eval_app")
def _hydra_main(raw: DictConfig) -> None:
    try:
        _evaluate(raw)
    except (UsageError, ConfigError, DataError, SummaryError, FileNotFoundError) as err:
        print(f"rlvr-eval: {err}", file=sys.stderr)
        sys.exit(2)


def _evaluate(raw: DictConfig) -> None:
    rank = join_process_group()
    folder = Path(raw.run_dir)
    overrides = list(HydraConfig.get().overrides.task)
    if raw.base_only and not (folder / RUN_INFO).exists():
        barrier()  # every rank has seen the folder empty before rank 0 writes run.json into it
        cfg = new_base_run(folder, raw, write=rank == 0)  # rank 0 builds the built-in base once
        barrier()
        sweep_and_report(folder, cfg)
        return
    runs = runs_in(folder)
    if runs == [folder]:
        sweep_and_report(folder, run_config_with_overrides(folder, overrides))
    else:
        compare_runs(folder, runs, overrides)


def join_process_group() -> int:
    """This process's rank when launched as one of several (``accelerate launch``, ``torchrun``): the
    sweep's pieces are then dealt out over the processes, each on its own device. 0 when alone."""
    if world_size_from_env() == 1:
        return 0
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).process_index  # gloo on CPUs, NCCL on GPUs


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
