"""accelerate (and DeepSpeed) set-up: the same code for one process, many CPU processes, or GPUs."""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from accelerate import Accelerator, DeepSpeedPlugin, InitProcessGroupKwargs

from train.config import BatchPlan, RunConfig


def world_size_from_env() -> int:
    """Processes in this job, as set by ``accelerate launch`` / ``torchrun`` (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def deepspeed_config(cfg: RunConfig, plan: BatchPlan) -> dict[str, Any]:
    """The preset's DeepSpeed config with batch sizes and clipping filled in from ours.

    Nothing is left "auto" for these: no dataloader is prepared, so accelerate could not infer them.
    The loss is normalised by our own aggregation (see ``train.actor.update_policy``).
    """
    ds = copy.deepcopy(dict(cfg.deepspeed.config))
    ds["train_micro_batch_size_per_gpu"] = cfg.trainer.micro_batch_size
    ds["gradient_accumulation_steps"] = plan.grad_accum
    ds["train_batch_size"] = cfg.trainer.micro_batch_size * plan.grad_accum * plan.world_size
    ds["gradient_clipping"] = cfg.trainer.max_grad_norm
    ds.setdefault("zero_allow_untested_optimizer", True)  # our torch AdamW is fine under ZeRO
    return ds


def build_accelerator(cfg: RunConfig, plan: BatchPlan) -> Accelerator:
    handlers = []
    if plan.world_size > 1 and not torch.cuda.is_available():
        handlers.append(InitProcessGroupKwargs(backend="gloo"))  # NCCL needs GPUs
    plugin = None
    if cfg.deepspeed.preset != "none":
        plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(cfg, plan))
    return Accelerator(
        gradient_accumulation_steps=plan.grad_accum,
        mixed_precision=cfg.trainer.mixed_precision,
        deepspeed_plugin=plugin,
        kwargs_handlers=handlers,
    )
