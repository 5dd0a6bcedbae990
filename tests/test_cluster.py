"""Multiruns on a cluster: hydra/launcher=slurm (hydra-submitit-launcher) and the process group of its jobs.

Without a cluster here, three checks stand in for one:
- the rank, world and master address submitit reads from SLURM's variables become torch.distributed's
  (``train/cluster.py``), for a 2-node job as for the local executor;
- the ``slurm`` preset turns into the sbatch script a cluster would get (``sbatch`` replaced by a recorder);
- a two-job multirun through submitit's local executor, each job 2 processes over gloo, trains,
  checkpoints, is interrupted the way SLURM interrupts a job at its time limit (SIGUSR2 to every task),
  is requeued and continues from its checkpoint;
- ``launch/slurm_deepspeed.sbatch`` runs under stand-in ``srun``/``scontrol``: trains with ZeRO-2 on 2
  processes, requeues itself on SLURM's USR1 warning, and resumes when run again.
The last two are marked ``distributed`` (about 2 minutes each).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.cli import TINY, metrics, run_cli
from train.cluster import join_job_process_group
from train.config import ConfigError, RunConfig


REPO = Path(__file__).resolve().parents[1]
TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch):
    """No torch.distributed or submitit variables; whatever the test sets is undone afterwards."""
    for key in [*TORCH_VARS, *(k for k in os.environ if k.startswith(("SUBMITIT_", "SLURM_")))]:
        monkeypatch.setenv(key, "")  # recorded, so that the value exported later is removed at teardown
        monkeypatch.delenv(key)
    return monkeypatch


def _local_task(env, rank: int, tasks: int = 2, job_id: str = "4242") -> None:
    env.setenv("SUBMITIT_EXECUTOR", "local")
    for key, value in dict(JOB_ID=job_id, NTASKS=tasks, JOB_NUM_NODES=1, NODEID=0, GLOBALID=rank, LOCALID=rank).items():
        env.setenv(f"SUBMITIT_LOCAL_{key}", str(value))


def test_a_local_task_gets_its_rank_and_the_jobs_master(clean_env):
    ports = set()
    for rank in (0, 1):
        _local_task(clean_env, rank)
        place = join_job_process_group()
        assert (place.rank, place.world_size, place.local_rank, place.local_world_size) == (rank, 2, rank, 2)
        assert [os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")] == [str(rank), "2", str(rank)]
        ports.add(os.environ["MASTER_PORT"])
        for key in TORCH_VARS:  # the next task starts from a clean environment, as a new process would
            clean_env.delenv(key)
    assert len(ports) == 1  # both tasks of the job meet on one port, drawn from the job id


def test_a_two_node_slurm_task_gets_its_global_rank_and_node_0_as_master(clean_env):
    slurm = dict(SLURM_JOB_ID="981", SLURM_NTASKS="16", SLURM_PROCID="9", SLURM_LOCALID="1", SLURM_JOB_NUM_NODES="2",
                 SLURM_NODEID="1", SLURM_JOB_NODELIST="gpu[07-08]", SUBMITIT_EXECUTOR="slurm")  # fmt: skip
    for key, value in slurm.items():
        clean_env.setenv(key, value)
    place = join_job_process_group()
    assert (place.rank, place.world_size, place.local_rank, place.local_world_size) == (9, 16, 1, 8)
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["WORLD_SIZE"] == "16"


def test_nothing_is_exported_outside_submitit_for_one_task_or_under_a_launcher(clean_env):
    assert join_job_process_group() is None  # a plain process
    _local_task(clean_env, 0, tasks=1)
    assert join_job_process_group() is None  # a job of one task: no process group
    _local_task(clean_env, 1)
    clean_env.setenv("WORLD_SIZE", "4")  # accelerate launch inside the job already placed this process
    assert join_job_process_group() is None
    assert "RANK" not in os.environ and os.environ["WORLD_SIZE"] == "4"


def test_a_submitit_job_must_resume_automatically(clean_env):
    from train.main import _join_cluster_job

    _local_task(clean_env, 0)
    cfg = RunConfig(resume="false")
    with pytest.raises(ConfigError, match="pass resume=auto"):
        _join_cluster_job(cfg)
    assert "RANK" not in os.environ


def test_the_slurm_preset_submits_one_array_of_multi_node_jobs(tmp_path):
    """The preset, as sbatch would receive it: the launcher is real, ``sbatch`` records its script and refuses
    (``srun``, which submitit checks for, is never run)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = tmp_path / "submitted.sh"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {script}\necho "sbatch: recorded" >&2\nexit 1\n')
    (bin_dir / "srun").write_text('#!/bin/sh\necho "srun: not a cluster" >&2\nexit 1\n')  # submitit looks for it
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    args = ["-m", "train.main", "-m", "hydra/launcher=slurm", "resume=auto", "algorithm=grpo,rloo",
            "hydra.launcher.nodes=2", "hydra.launcher.partition=gpu", "hydra.launcher.account=rl", "logger=none"]
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and script.exists(), proc.stderr[-3000:]
    text = script.read_text()
    for line in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--cpus-per-task=8", "--time=240",
                 "--signal=USR2@120", "--partition=gpu", "--account=rl", "--array=0-1%2", "--open-mode=append"):
        assert f"#SBATCH {line}\n" in text, f"{line} not in:\n{text}"
    assert re.search(r"^srun .*-m submitit\.core\._submit ", text, re.MULTILINE), text


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the local controller's tasks)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _complete_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in (run_dir / "checkpoints").glob("step_*"))


@pytest.mark.distributed
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the local controller's tasks through /proc")
def test_a_multirun_of_two_process_jobs_is_requeued_and_resumes(tmp_path, tiny_cache):
    steps = 12  # the interruption comes after step 1: the job must still be training when it lands
    args = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=30",
            "resume=auto", "algorithm=grpo,rloo", f"model.cache_dir={tiny_cache}", *TINY, f"trainer.total_steps={steps}",
            "trainer.save_every=1", "trainer.collective_timeout_s=60", "eval.after_train=false"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="disabled", HYDRA_FULL_ERROR="1")
    sweep = subprocess.Popen([sys.executable, "-m", "train.main", *args], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    # Each job is interrupted once, after its first checkpoint, as SLURM does at a job's time limit:
    # SIGUSR2 to every task. Rank 0 re-submits the job and exits; the controller starts it again.
    kept: dict[str, dict[int, int]] = {}  # job folder -> checkpoints at the interruption and their times
    deadline = time.time() + 600
    try:
        while sweep.poll() is None and time.time() < deadline:
            for first in tmp_path.glob("multirun/*/[01]_*/checkpoints/step_000001"):
                run_dir = first.parents[1]
                if run_dir.name in kept:
                    continue
                controller = int(OmegaConf.load(run_dir / ".hydra/hydra.yaml").hydra.job.id)  # local job id: its pid
                tasks = _children(controller)
                assert len(tasks) == 2, f"{run_dir.name}: expected 2 tasks under the controller, found {tasks}"
                for pid in tasks:
                    os.kill(pid, signal.SIGUSR2)
                kept[run_dir.name] = {s: _step_time(run_dir, s) for s in _complete_steps(run_dir) if s < steps}
            time.sleep(0.1)
        out, _ = sweep.communicate(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pytest.fail("the multirun did not end within 10 minutes")
    finally:
        if sweep.poll() is None:  # the controllers and their tasks are in the multirun's process group
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.communicate()
    assert sweep.returncode == 0, out[-4000:]
    assert sorted(kept) == ["0_grpo", "1_rloo"], f"not every job was interrupted mid-run: {sorted(kept)}\n{out[-3000:]}"

    (sweep_dir,) = tmp_path.glob("multirun/*")
    for name, before in kept.items():
        run_dir = sweep_dir / name
        (job_folder,) = (sweep_dir / ".submitit").glob(str(OmegaConf.load(run_dir / ".hydra/hydra.yaml").hydra.job.id))
        rank0_log = next(job_folder.glob("*_0_log.out")).read_text()
        assert "Requeued job" in rank0_log, rank0_log[-2000:]
        assert rank0_log.count("Starting with JobEnvironment") == 2  # the first start and the requeued one
        assert _complete_steps(run_dir) == list(range(1, steps + 1))
        # checkpoints made before the interruption were resumed from, not trained again
        assert {s: _step_time(run_dir, s) for s in before} == before
        assert [m["train/step"] for m in metrics(run_dir) if "train/step" in m] == list(range(1, steps + 1))
        placement = OmegaConf.load(run_dir / "run.json").placement  # written again by the requeued job
        assert placement.distributed_type == "MULTI_CPU" and len(placement.devices) == 2


def _step_time(run_dir: Path, step: int) -> float:
    return (run_dir / "checkpoints" / f"step_{step:06d}" / "rlvr_checkpoint.json").stat().st_mtime_ns


@pytest.mark.distributed
def test_the_sbatch_script_trains_requeues_at_its_time_limit_and_resumes(tmp_path, tiny_cache):
    """launch/slurm_deepspeed.sbatch as SLURM would run it on one node of 2 "GPUs" (2 CPU processes, ZeRO-2):
    ``srun`` runs its command here, ``scontrol`` names this host and records a requeue. USR1 (SLURM's warning
    before the time limit) makes the script requeue the job; run again, as SLURM would, it resumes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    requeued = tmp_path / "requeued"
    (bin_dir / "srun").write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text(
        f'#!/bin/sh\ncase "$1 $2" in\n  "show hostnames") echo 127.0.0.1 ;;\n  requeue*) echo "$2" >> {requeued} ;;\n'
        '  *) exit 1 ;;\nesac\n'
    )
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", OMP_NUM_THREADS="1",
               WANDB_MODE="disabled", SLURM_JOB_ID="77", SLURM_JOB_NODELIST="node01", SLURM_NNODES="1", SLURM_NODEID="0",
               SLURM_GPUS_ON_NODE="2", SLURM_SUBMIT_DIR=str(REPO), MASTER_PORT=str(_free_port()))  # fmt: skip
    steps = 12
    cmd = ["bash", str(REPO / "launch/slurm_deepspeed.sbatch"), "zero2", f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}",
           *TINY, f"trainer.total_steps={steps}", "trainer.save_every=1", "eval.after_train=false"]  # fmt: skip

    job = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while not (run_dir / "checkpoints/step_000001").exists() and job.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert job.poll() is None, f"the job ended before its first checkpoint:\n{job.communicate()[0][-3000:]}"
        job.send_signal(signal.SIGUSR1)  # the batch shell's warning; SLURM would then stop every task itself
        job.wait(timeout=60)
        assert requeued.read_text().split() == ["77"]
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the tasks, as SLURM's requeue would
        job.wait()
    done_before = _complete_steps(run_dir)
    assert done_before and done_before[-1] < steps

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert _complete_steps(run_dir)[-1] == steps
    assert [m["train/step"] for m in metrics(run_dir) if "train/step" in m] == list(range(1, steps + 1))
    assert OmegaConf.load(run_dir / "run.json").placement.zero_stage == 2


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_lost_peer_in_a_submitit_job_points_at_the_requeue_not_at_resume_true(clean_env):
    from train.distributed import hang_message

    err = RuntimeError("Connection closed by peer")
    assert "resume=true" in hang_message(1, 2, 60, err, None)  # a plain run: the user resumes it
    _local_task(clean_env, 1)
    said = hang_message(1, 2, 60, err, None)  # rank 0 may have left to requeue the job
    assert "requeued by submitit" in said and "resume=true" not in said
