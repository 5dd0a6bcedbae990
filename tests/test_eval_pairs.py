"""rlvr-eval without training: a base and other models on the same problems (model pairs), and several
benchmarks in one sweep (eval.tasks), each with its own records and summary."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

from eval.summarize import load_summary
from tests.cli import run_cli
from train.base_model import build_model, build_tokenizer
from train.config import BuiltinModelConfig

PRESETS = Path(__file__).resolve().parent / "data" / "presets"
SWEEP = ["eval.n=4", "eval.num_problems=0", "eval.max_new_tokens=12", "eval.batch_size=8", "eval.keep_samples=2",
         "trainer.threads=1", "logger.wandb=false"]  # fmt: skip


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    """A second tiny text model: a stand-in for a published RL release of the base."""
    folder = tmp_path_factory.mktemp("other-model")
    tokenizer = build_tokenizer(string.printable)
    build_model(BuiltinModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=9), tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_base_and_a_published_model_in_one_summary(text_model, other_model, tmp_path):
    run_dir = tmp_path / "pair"
    run_cli("rlvr-eval", ["base_only=true", f"run_dir={run_dir}", "model=hf", f"model.name_or_path={text_model}",
                          f"+eval.models={{released: '{other_model}'}}", "task=gsm8k",
                          f"task.path={PRESETS / 'gsm8k.jsonl'}", *SWEEP], cwd=tmp_path)  # fmt: skip
    summary = load_summary(run_dir / "eval" / "summary.json")
    assert summary["base"]["path"] == str(text_model)
    [released] = summary["checkpoints"]
    assert (released["model"], released["step"], released["path"]) == ("released", None, str(other_model))
    assert set(released["diff_vs_base"]) == {1, 2, 4} and "verdict" in released
    table = json.loads((run_dir / "eval" / "perplexity.json").read_text())["models"]
    assert sorted(table) == ["base", "released"]
    report = (run_dir / "report.md").read_text()
    assert f"no training: `released` (`{other_model}`) against it" in report and released["verdict"]["text"] in report
    # rerun with one more model: the first two are not sampled again
    [records] = (run_dir / "eval").glob("records_*.jsonl")
    before = records.read_text()
    run_cli("rlvr-eval", [f"run_dir={run_dir}", f"+eval.models={{released: '{other_model}', again: '{text_model}'}}"], cwd=tmp_path)
    assert records.read_text().startswith(before) and len(records.read_text().splitlines()) == 6
    assert [c["model"] for c in load_summary(run_dir / "eval" / "summary.json")["checkpoints"]] == ["released", "again"]


def test_several_benchmarks_in_one_sweep(text_model, tmp_path):
    run_dir = tmp_path / "multi"
    tasks = f"eval.tasks=[gsm8k,{{preset: math500, path: '{PRESETS / 'math500.jsonl'}'}}]"
    run_cli("rlvr-eval", ["base_only=true", f"run_dir={run_dir}", "model=hf", f"model.name_or_path={text_model}",
                          "task=gsm8k", f"task.path={PRESETS / 'gsm8k.jsonl'}", tasks, *SWEEP], cwd=tmp_path)  # fmt: skip
    main = load_summary(run_dir / "eval" / "summary.json")
    other = load_summary(run_dir / "eval" / "tasks" / "math500" / "summary.json")
    assert (main["task"], other["task"]) == ("gsm8k", "math500")
    assert main["num_problems"] == other["num_problems"] == 2
    names = sorted(p.name.split("_n4")[0] for p in (run_dir / "eval").glob("records_*.jsonl"))
    assert names == ["records_gsm8k", "records_math500"]
    assert (run_dir / "eval" / "tasks" / "math500" / "passk_curves.png").exists()


def test_an_unknown_benchmark_is_named_with_the_known_ones(text_model, tmp_path):
    proc = run_cli("rlvr-eval", ["base_only=true", f"run_dir={tmp_path / 'x'}", "model=hf", f"model.name_or_path={text_model}",
                                 "eval.tasks=[nope]", *SWEEP], cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2 and "eval.tasks: no task preset 'nope'; known: aime24" in proc.stderr
