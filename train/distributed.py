"""accelerate (and DeepSpeed) set-up: the same code for one process, many CPU processes, or GPUs.

Liveness: every collective gives up after ``trainer.collective_timeout_s`` (the process group's
timeout, and the default of groups made later, such as DeepSpeed's ZeRO groups). A process that
stops answering (hung, stopped, its machine gone) then ends the job instead of blocking the others
forever: :func:`reporting_hangs` turns the backend's error into a :class:`~train.errors.RunError`
that says which ranks did not answer a check made over a second gloo group. The launcher (torchrun)
then stops the remaining processes; it gives each 30 s to exit after SIGTERM before SIGKILL.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from datetime import timedelta
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
from accelerate import Accelerator, DeepSpeedPlugin, InitProcessGroupKwargs
from accelerate.utils import DistributedType

from train.cluster import under_submitit
from train.config import BatchPlan, RunConfig
from train.models import mixed_precision
from train.errors import RunError

CHECK_MAX_S = 15.0  # longest wait for the other ranks in the check after a timeout


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


def zero_stage(cfg: RunConfig) -> int:
    """The DeepSpeed ZeRO stage the run trains under; -1 without DeepSpeed."""
    if cfg.deepspeed.preset == "none":
        return -1
    return int(dict(cfg.deepspeed.config).get("zero_optimization", {}).get("stage", 0))


def build_accelerator(cfg: RunConfig, plan: BatchPlan) -> Accelerator:
    """One ``Accelerator`` for every mode: 1 process, DDP, or DeepSpeed; GPUs or CPUs (gloo)."""
    on_cpu = not torch.cuda.is_available()
    # Every collective of the job, also DeepSpeed's (accelerate hands these to deepspeed.init_distributed),
    # gives up after the timeout instead of waiting forever on a process that stopped answering.
    group = {"timeout": default_group_timeout(cfg.trainer.collective_timeout_s)}
    if plan.world_size > 1 and on_cpu:
        group["backend"] = "gloo"  # NCCL needs GPUs
    handlers = [InitProcessGroupKwargs(**group)]
    plugin = None
    if cfg.deepspeed.preset != "none":
        if on_cpu:
            _deepspeed_on_cpu()
        plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(cfg, plan))
    return Accelerator(
        gradient_accumulation_steps=plan.grad_accum,
        mixed_precision=mixed_precision(cfg),  # bf16 model.dtype: float32 masters, bf16 compute
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


def default_group_timeout(seconds: float) -> timedelta:
    """The timeout for the default process group, made torch's default for groups created later too.

    DeepSpeed makes its ZeRO groups with ``torch.distributed.new_group(ranks)``, which takes torch's
    module default (30 min), not the default group's timeout: a stopped rank then blocked a ZeRO-2
    all-reduce for the full 30 minutes though the default group's timeout was 15 s.
    """
    timeout = timedelta(seconds=seconds)
    from torch.distributed import distributed_c10d

    distributed_c10d.default_pg_timeout = timeout  # read by new_group() when given no timeout
    if isinstance(distributed_c10d.default_pg_nccl_timeout, timedelta):  # None in CPU-only builds
        distributed_c10d.default_pg_nccl_timeout = timeout
    return timeout


_BACKEND_FAILURE = re.compile(r"gloo|nccl|timed out|connection (closed|reset) by peer", re.IGNORECASE)
_FAILED_RANKS = re.compile(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier")


def is_collective_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective that timed out or lost a peer (gloo raises a plain RuntimeError)."""
    return isinstance(err, dist.DistError) or (isinstance(err, RuntimeError) and bool(_BACKEND_FAILURE.search(str(err))))


@contextlib.contextmanager
def reporting_hangs(accelerator: Accelerator, timeout_s: float) -> Iterator[None]:
    """Run the body; when one of its collectives fails (timeout, lost peer), check which ranks still answer
    and raise RunError saying so. One process: nothing to check."""
    check_group = None
    if accelerator.num_processes > 1 and dist.is_initialized():
        # Made up front by every rank (a collective); its own connections still work after the main ones broke.
        check_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=_check_window(timeout_s)))
    try:
        yield
    except RuntimeError as err:
        if check_group is None or isinstance(err, RunError) or not is_collective_failure(err):
            raise
        rank, world = accelerator.process_index, accelerator.num_processes
        raise RunError(hang_message(rank, world, timeout_s, err, *unanswered_ranks(check_group, timeout_s))) from err


def _check_window(timeout_s: float) -> float:
    """How long the check waits. The other live ranks time out too, each ``timeout_s`` after it entered the
    stuck collective, so a rank that entered it much later than this one is named with the stopped ones."""
    return min(CHECK_MAX_S, max(5.0, timeout_s / 2))


def unanswered_ranks(group: Any, timeout_s: float) -> tuple[Optional[list[int]], str]:
    """Ranks that did not reach a monitored barrier on ``group`` in time ([] = all did; None = this rank cannot
    tell: only rank 0 hears every rank), and the check's own error, if it failed otherwise."""
    try:
        dist.monitored_barrier(group=group, timeout=timedelta(seconds=_check_window(timeout_s)), wait_all_ranks=True)
        return [], ""
    except RuntimeError as err:
        found = _FAILED_RANKS.search(str(err))
        if found:
            return [int(r) for r in found.group(1).replace(" ", "").split(",") if r], ""
        return None, str(err).strip()[:300]


def hang_message(
    rank: int, world: int, timeout_s: float, err: BaseException, unanswered: Optional[list[int]], check_error: str = ""
) -> str:
    """What a rank says when a collective failed: which ranks did not answer, the backend's error, what next."""
    if unanswered:
        names = ", ".join(map(str, unanswered))
        who = (f"rank{'s' if len(unanswered) > 1 else ''} {names} did not answer a check either: stopped, hung, "
               "gone, or still busy far behind the others (see its log and its machine)")  # fmt: skip
    elif unanswered == []:
        who = ("every rank answered a check: all are alive, but they waited on different collectives, or one took "
               "longer than the timeout (raise trainer.collective_timeout_s if that is expected)")  # fmt: skip
    elif rank == 0:
        who = f"the check of which ranks still answer failed too (a process has gone): {check_error}"
    else:
        who = "rank 0 did not confirm a check; its message names the ranks that did not answer"
    return (
        f"rank {rank} of {world}: a collective (all-reduce, gather, barrier) got no answer within "
        f"trainer.collective_timeout_s={timeout_s:g} s, or lost a process, so the job stops\n"
        f"  {who}\n"
        f"  the backend's error: {type(err).__name__}: {str(err).strip()[:500]}\n"
        f"  {_how_to_go_on()}"
    )


def _how_to_go_on() -> str:
    if under_submitit():  # rank 0 may have stopped to requeue the job (hydra/launcher=slurm): nothing to do
        return ("a job requeued by submitit (a timeout or preemption) starts again by itself and resume=auto continues "
                "it; otherwise, once the cause is fixed, rerun the multirun with the same hydra.sweep.dir")
    return "once the cause is fixed, continue from the last checkpoint with resume=true"
