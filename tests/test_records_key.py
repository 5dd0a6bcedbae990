"""A records file is tied to everything that decides a verdict: records are never reused for other problems,
another template, verifier, verifier columns, engine or sampling setting."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from eval.records import read_records
from eval.sweep import SweepTarget, records_path, sweep
from tests.test_datasets import run_config
from train.tasks import load_task

FIXTURE = Path(__file__).resolve().parent / "data" / "presets" / "gsm8k.jsonl"


def _config(tmp_path: Path, *overrides: str):
    return run_config("task=gsm8k", f"task.path={FIXTURE}", "model=hf", "eval.n=2", "eval.num_problems=0",
                      "eval.max_new_tokens=4", "eval.batch_size=2", *overrides)  # fmt: skip


@pytest.mark.parametrize(
    "change",
    ["task.template=plain", "task.reward=arithmetic", "task.columns=[answer]", "task.chat=true", "rollout.engine=vllm",
     "eval.n=3", "eval.temperature=1.0", "eval.top_p=1.0", "eval.max_new_tokens=8", "eval.seed=1", "task.name=other"],
)
def test_every_setting_that_decides_a_verdict_names_another_records_file(tmp_path, change):
    assert records_path(tmp_path, _config(tmp_path, change)) != records_path(tmp_path, _config(tmp_path))


def test_same_settings_same_records_file(tmp_path):
    assert records_path(tmp_path, _config(tmp_path)) == records_path(tmp_path, _config(tmp_path, "eval.num_problems=1"))


def test_changed_problems_under_the_same_ids_are_sampled_again(tmp_path, text_model):
    """The reported bug: ``task.path=<other file>`` with other questions and answers under the same row ids
    kept the old records and sampled nothing."""
    cfg = _config(tmp_path)
    path = records_path(tmp_path, cfg)
    base = [SweepTarget("base", None, str(text_model))]
    first = sweep(path, base, load_task(cfg.task, "test"), cfg, progress=False)
    assert len(first) == 2 and all(r.task == "gsm8k" and r.problem_hash for r in first)
    assert json.loads(path.with_suffix(".key.json").read_text())["reward"] == "math"

    again = sweep(path, base, load_task(cfg.task, "test"), cfg, progress=False)
    assert again == first and len(path.read_text().splitlines()) == 2  # resuming: nothing sampled twice

    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    rows[1]["answer"] = rows[1]["answer"].replace("#### 150", "#### 151")  # one gold answer changes
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg2 = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, path=str(other)))
    assert records_path(tmp_path, cfg2) == path  # the same settings: the same file, told apart per problem
    with pytest.warns(UserWarning, match=r"1 problem\(s\) under known ids now have other content"):
        swept = sweep(path, base, load_task(cfg2.task, "test"), cfg2, progress=False)
    assert len(path.read_text().splitlines()) == 3  # only the changed problem was sampled again (chunks of 1)
    new, old = {r.problem_id: r.problem_hash for r in swept}, {r.problem_id: r.problem_hash for r in first}
    assert sorted(new) == sorted(old) == ["0", "1"]  # row numbers: the ids that collided
    assert new["0"] == old["0"] and new["1"] != old["1"]
    assert {r.problem_id: r.problem_hash for r in read_records(path)} == new  # the later record wins


def test_records_of_older_sweeps_still_read(tmp_path):
    """Lines without task, problem_hash and tags read with their defaults; such records match no problem digest,
    so a sweep measures their problems again rather than trusting them."""
    path = tmp_path / "records.jsonl"
    path.write_text('{"model": "base", "step": null, "path": "/m", "problem_id": "p1", "n": 4, "correct": 1}\n')
    [record] = read_records(path)
    assert (record.task, record.problem_hash, record.tags, record.correct) == ("", "", {}, 1)
