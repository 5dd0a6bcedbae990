"""Failure drills: a run killed with SIGKILL while training or while saving a checkpoint, and a run whose
disk fills up mid-save, resume to the uninterrupted run's weights (byte for byte) and metrics.

Each drill trains the TINY model for 6 steps with checkpoints every 2 steps and compares against one
uninterrupted reference run. Timing, throughput and memory metrics (``time/*``, ``perf/*``, ``memory/*``) are the only keys
allowed to differ. About a minute per drill on 2 cores. The 2-process drills (a killed or stopped rank)
are in ``tests/test_distributed.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import TINY, run_cli
from train.checkpoint import latest_checkpoint, list_checkpoints

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RUN = [*TINY, "trainer.total_steps=6", "trainer.save_every=2", "eval.after_train=false"]
FINAL = Path("checkpoints") / "step_000006"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("drills") / "reference"
    run_cli("rlvr-train", [f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}", *RUN], cwd=REPO)
    return run_dir


def _metrics(run_dir: Path) -> dict[int, dict]:
    """Step -> record without timings; each step logged exactly once."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["train/step"] for r in records]
    assert steps == sorted(set(steps)), f"steps logged twice or out of order: {steps}"
    return {r["train/step"]: {k: v for k, v in r.items() if not k.startswith(("time/", "perf/", "memory/"))} for r in records}


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    assert (run_dir / FINAL / "model.safetensors").read_bytes() == (reference / FINAL / "model.safetensors").read_bytes()
    assert _metrics(run_dir) == _metrics(reference)
    assert [s for s, _ in list_checkpoints(run_dir)] == [2, 4, 6]
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))


def _resume(run_dir: Path, tiny_cache: Path, mode: str = "true") -> subprocess.CompletedProcess:
    return run_cli("rlvr-train", [f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}", *RUN, f"resume={mode}"], cwd=REPO)


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def test_kill_9_while_training_then_resume_gives_the_same_run(reference, tiny_cache, tmp_path):
    run_dir = tmp_path / "killed"
    proc = _start(["-m", "train.main", f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}", *RUN])
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while len(metrics.read_text().splitlines()) < 3 if metrics.exists() else True:  # step 3 logged: past checkpoint 2
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest_checkpoint(run_dir)[0] in (2, 4)  # killed between two checkpoints, wherever that fell
    _resume(run_dir, tiny_cache)
    _assert_same_run(run_dir, reference)


def test_kill_9_while_saving_a_checkpoint_then_resume_gives_the_same_run(reference, tiny_cache, tmp_path):
    run_dir = tmp_path / "killed_in_save"
    proc = _start([str(REPO / "tests" / "drill_workers.py"), "4", f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}", *RUN])
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    partial = run_dir / "checkpoints" / ".tmp-step_000004"
    assert (partial / "train_state").is_dir() and (partial / "model.safetensors").is_file()  # all but the metadata
    assert [s for s, _ in list_checkpoints(run_dir)] == [2]
    proc = _resume(run_dir, tiny_cache, mode="auto")
    _assert_same_run(run_dir, reference)


def _can_mount_tmpfs() -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(shutil.which("unshare") is None or not _can_mount_tmpfs(),
                    reason="needs `unshare -m` and a tmpfs mount (root) to fill a disk")  # fmt: skip
def test_a_full_disk_stops_the_save_clearly_and_the_run_resumes(reference, tiny_cache, tmp_path):
    """The run writes to a tmpfs that holds one checkpoint and a half: the save of step 4 fails with ENOSPC.
    The message names the folder, the free space and checkpoint 2, which stays whole; copied to a disk
    with room, the run resumes from it to the uninterrupted run's weights and metrics."""
    checkpoint = reference / "checkpoints" / "step_000002"
    size_kb = int(1.5 * sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) / 1024)
    mount, kept = tmp_path / "disk", tmp_path / "kept"
    mount.mkdir()
    run_dir = mount / "run"
    train = " ".join([sys.executable, "-m", "train.main", f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}", *RUN])
    script = f"mount -t tmpfs -o size={size_kb}k tmpfs {mount} && {{ {train}; echo $? > {tmp_path / 'code'}; cp -a {run_dir} {kept}; }}"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert (tmp_path / "code").read_text().strip() == "1", proc.stderr[-3000:]
    err = proc.stderr
    assert f"error: saving the checkpoint of step 4 into {run_dir / 'checkpoints' / '.tmp-step_000004'} failed" in err, err[-3000:]
    assert "(the disk is full)" in err and "free space there: " in err
    assert f"last complete checkpoint: {run_dir / 'checkpoints' / 'step_000002'} (step 2); the partial save was removed" in err
    assert "Traceback" not in err
    assert [s for s, _ in list_checkpoints(kept)] == [2] and not list((kept / "checkpoints").glob(".tmp-*"))
    # The checkpoint before the failure is whole: every file the reference run's has, byte for byte, except the
    # metadata (it records the run's folder and timings) and Python's and numpy's RNG states (seeded by the OS at
    # start-up in each run; training draws from torch's generators only).
    for file in checkpoint.rglob("*"):
        if file.is_file() and file.name != "rlvr_checkpoint.json" and not file.name.startswith("random_states"):
            assert (kept / "checkpoints" / "step_000002" / file.relative_to(checkpoint)).read_bytes() == file.read_bytes(), file
    _resume(kept, tiny_cache)
    _assert_same_run(kept, reference)
