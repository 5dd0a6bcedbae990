"""Hydra callbacks of ``rlvr-train``: when a multirun ends, compare its runs and write its report.

Registered in ``conf/config.yaml`` (``hydra.callbacks``), so ``rlvr-train -m algorithm=ppo,grpo,...``
ends with the comparison table (intervals, verdicts), ``comparison.json``, its plots and
``report.md`` in the sweep folder, as ``rlvr-eval run_dir=<sweep folder>`` would write them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from eval.summarize import SummaryError
from train.config import EvalConfig


class CompareWhenDone(Callback):
    """After the last job of a multirun: compare the runs that were swept (``eval.after_train``)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if os.environ.get("RANK", "0") != "0":  # one comparison per multirun, not one per process
            return
        from eval.main import compare_and_report, runs_in

        folder = Path(config.hydra.sweep.dir)
        runs = [run for run in runs_in(folder) if (run / "eval" / "summary.json").exists()]
        if not runs:
            print(f"no run of {folder} was swept (eval.after_train=false): compare them with rlvr-eval run_dir={folder}")
            return
        ev = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalConfig), config.eval))
        try:
            compare_and_report(folder, runs, ev)
        except SummaryError as err:  # e.g. runs of other bases: the runs stand, only the comparison cannot
            print(f"comparison of {folder} not possible: {err}")
