"""accelerate (and DeepSpeed) set-up: the same code for one process, many CPU processes, or GPUs."""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from accelerate import Accelerator, DeepSpeedPlugin, InitProcessGroupKwargs
from accelerate.utils import DistributedType

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
    """One ``Accelerator`` for every mode: 1 process, DDP, or DeepSpeed; GPUs or CPUs (gloo)."""
    on_cpu = not torch.cuda.is_available()
    handlers = []
    if plan.world_size > 1 and on_cpu:
        handlers.append(InitProcessGroupKwargs(backend="gloo"))  # NCCL needs GPUs
    plugin = None
    if cfg.deepspeed.preset != "none":
        if on_cpu:
            _deepspeed_on_cpu()
        plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(cfg, plan))
    return Accelerator(
        gradient_accumulation_steps=plan.grad_accum,
        mixed_precision=cfg.trainer.mixed_precision,
        deepspeed_plugin=plugin,
        kwargs_handlers=handlers,
        # Without GPUs, plain DDP must be told it runs on CPUs to pick gloo (MULTI_CPU); DeepSpeed
        # must not be: accelerate's cpu flag silently turns DeepSpeed off (see _deepspeed_on_cpu).
        cpu=on_cpu and plugin is None,
    )


def _deepspeed_on_cpu() -> None:
    """Let DeepSpeed run on CPUs under accelerate, the same whoever launched us.

    ``AcceleratorState`` ignores the DeepSpeed plugin when ``ACCELERATE_USE_CPU`` is true (what
    ``accelerate launch --cpu`` exports), and would quietly train plain DDP instead. DeepSpeed picks
    its CPU accelerator itself when no GPU is found; naming it saves the probe and its warning.
    """
    os.environ.pop("ACCELERATE_USE_CPU", None)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


def keep_grad_norm(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Make ``model.get_global_grad_norm()`` report the norm under DeepSpeed ZeRO-0 in fp32 too.

    DeepSpeed's ZeRO and fp16/bf16 optimizers record the norm they clip by, but fp32 ZeRO-0 clips in
    ``DeepSpeedEngine.clip_fp32_gradients`` and drops the result (``_take_model_step`` in DeepSpeed
    0.19), so the trainer would log NaN. The wrapper keeps the norm where ``get_global_grad_norm``
    reads it. With ``trainer.max_grad_norm=0`` DeepSpeed does not clip and the norm stays NaN.
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED:  # then ``model`` is not an engine
        return
    if model.zero_optimization() or model.fp16_enabled() or model.bfloat16_enabled():
        return
    from deepspeed.runtime.utils import clip_grad_norm_

    def clip_and_keep() -> None:
        model._global_grad_norm = clip_grad_norm_(model.module.parameters(), model.gradient_clipping(), mpu=model.mpu)

    model.clip_fp32_gradients = clip_and_keep
