"""metrics.jsonl follows the checkpoints: resumes keep the records up to the checkpoint's step, fresh
starts begin a new file (the old one set aside), torn last lines are dropped, torn middles refused."""

from __future__ import annotations

import json

import pytest

from tests.cli import TINY, metrics, run_cli
from train.config import LoggerConfig
from train.tracking import METRICS, STEP_KEY, Tracker, read_metrics, set_aside_metrics, start_metrics, truncate_metrics

OFF = LoggerConfig(wandb=False)


def _write(run_dir, steps, tail=""):
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({STEP_KEY: s, "train/reward_mean": s / 10}) + "\n" for s in steps)
    (run_dir / METRICS).write_text(lines + tail)


def _steps(run_dir):
    return [r[STEP_KEY] for r in read_metrics(run_dir)]


def test_a_torn_last_line_is_skipped_with_a_warning_naming_the_file(tmp_path):
    _write(tmp_path, [1, 2, 3], tail='{"train/step": 4, "train/rew')
    with pytest.warns(UserWarning, match=rf"{tmp_path / METRICS}:4: skipping a truncated last line"):
        assert _steps(tmp_path) == [1, 2, 3]


def test_a_torn_line_in_the_middle_is_corruption(tmp_path):
    _write(tmp_path, [1], tail='{"train/step": 2, "train/rew\n' + json.dumps({STEP_KEY: 3}) + "\n")
    with pytest.raises(ValueError, match=rf"{tmp_path / METRICS}:2: malformed record in the middle of the file"):
        read_metrics(tmp_path)
    (tmp_path / METRICS).write_text(json.dumps({STEP_KEY: 1}) + "\n[1, 2]\n" + json.dumps({STEP_KEY: 3}) + "\n")
    with pytest.raises(ValueError, match=r":2: malformed record.*not a record with an integer 'train/step'"):
        read_metrics(tmp_path)


def test_resume_keeps_exactly_the_records_up_to_the_checkpoint(tmp_path):
    _write(tmp_path, [1, 2, 3, 4, 5, 6], tail='{"train/step": 7')
    with pytest.warns(UserWarning, match="truncated last line"):
        truncate_metrics(tmp_path, 4)
    assert _steps(tmp_path) == [1, 2, 3, 4]
    assert (tmp_path / METRICS).read_text().endswith("}\n")
    assert not list(tmp_path.glob(".*tmp"))  # rewritten through a temp file, which is gone


def test_a_fresh_start_sets_the_old_file_and_wandb_id_aside(tmp_path, capsys):
    _write(tmp_path, [1, 2, 3, 4, 5, 6])
    (tmp_path / "wandb_run_id").write_text("abc123")
    aside = start_metrics(tmp_path, start_step=0)
    assert aside.name.startswith("metrics.before-fresh-start-") and aside.suffix == ".jsonl"
    assert [json.loads(line)[STEP_KEY] for line in aside.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert not (tmp_path / METRICS).exists() and not (tmp_path / "wandb_run_id").exists()
    assert (tmp_path / f"wandb_run_id.{aside.stem.removeprefix('metrics.')}").read_text() == "abc123"
    assert aside.name in capsys.readouterr().out
    _write(tmp_path, [1])
    second = set_aside_metrics(tmp_path)  # within the same second: a name of its own
    assert second != aside and second.exists() and aside.exists()
    assert start_metrics(tmp_path, start_step=0) is None  # nothing to set aside


def test_the_tracker_cuts_a_torn_tail_before_appending(tmp_path):
    _write(tmp_path, [1, 2], tail='{"train/step": 3, "x":')
    with pytest.warns(UserWarning, match="truncated last line"):
        tracker = Tracker(tmp_path, OFF, {}, name="t")
    tracker.log({"eval/pass@1": 0.5}, step=2)
    assert _steps(tmp_path) == [1, 2, 2]
    _write(tmp_path, [1], tail=json.dumps({STEP_KEY: 2}))  # whole, only the newline is missing: kept
    Tracker(tmp_path, OFF, {}, name="t").log({"a": 1}, step=3)
    assert _steps(tmp_path) == [1, 2, 3]


def test_rerun_after_a_kill_before_the_first_checkpoint_starts_a_new_file(tmp_path, tiny_cache):
    """The run killed at step 6 of 12 before any checkpoint, rerun with resume=auto: the file holds the
    new run's steps once, not 1..6 then 1..N; the killed run's records are kept aside."""
    run_dir = tmp_path / "run"
    _write(run_dir, [1, 2, 3, 4, 5, 6], tail='{"train/st')  # and torn by the kill
    run_cli("rlvr-train", [f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}", *TINY, "trainer.total_steps=2",
                           "trainer.save_every=2", "eval.after_train=false", "resume=auto"], cwd=tmp_path)  # fmt: skip
    assert [m[STEP_KEY] for m in metrics(run_dir)] == [1, 2]
    (aside,) = run_dir.glob("metrics.before-fresh-start-*.jsonl")
    assert aside.read_text().endswith('{"train/st')  # set aside as it was, not rewritten
