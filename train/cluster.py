"""Jobs started by submitit (``hydra/launcher=slurm``, ``hydra/launcher=submitit_local``): the process group.

``accelerate launch`` (torchrun) tells each process its place through ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. A multirun job that submitit starts as N nodes
x G tasks gets none of these: each task is the Hydra job itself, told its place by SLURM (or by
submitit's local controller). :func:`join_job_process_group` exports what submitit reads from the
scheduler as those same variables, so ``Accelerator`` forms the same process group, and the
training code (DDP or DeepSpeed ZeRO) is the one ``launch/gpu_deepspeed.sh`` runs.

Requeue: on timeout or preemption SLURM (or the local controller) sends the tasks ``SIGUSR2``;
submitit's handler in rank 0 re-submits the job with the same arguments, so the same Hydra job
starts again in the same output folder, and ``resume=auto`` continues it from its latest complete
checkpoint (a checkpoint being written when the signal came is removed on restart).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from train.errors import RunError

@dataclass(frozen=True)
class JobPlace:
    """Where this task sits in its submitit job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int


def under_submitit() -> bool:
    """Whether submitit started this process (its executors export ``SUBMITIT_EXECUTOR``)."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def join_job_process_group() -> Optional[JobPlace]:
    """Export a multi-task submitit job's ranks as torch.distributed's variables; None when there is nothing to do.

    Nothing is done outside submitit, for a one-task job, or when a launcher inside the job
    (``accelerate launch`` in an sbatch script) already set ``WORLD_SIZE``.
    """
    if not under_submitit() or "WORLD_SIZE" in os.environ:
        return None
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks == 1:
        return None
    # The master port is drawn from the job id: every task of the job, and the job after a requeue, agree on it.
    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    place = JobPlace(env.rank, env.world_size, env.local_rank, env.local_world_size, env.master_addr, env.master_port)
    _check_gpus(place)
    return place


def _check_gpus(place: JobPlace) -> None:
    """Each task trains on ``cuda:LOCAL_RANK`` (accelerate's choice), so it must see all of its node's GPUs."""
    import torch

    if not torch.cuda.is_available():
        return
    seen = torch.cuda.device_count()
    if seen < place.local_world_size:
        raise RunError(
            f"task {place.rank} (local rank {place.local_rank} of {place.local_world_size} on its node) sees {seen} "
            "GPU(s), but each task trains on cuda:<local rank> and must see all of its node's GPUs: request them "
            "per node (hydra.launcher.gpus_per_node, with hydra.launcher.gpus_per_task unset) so SLURM does not "
            "bind one GPU to each task"
        )
