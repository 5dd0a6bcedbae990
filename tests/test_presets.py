"""Every task preset end to end from a local file in its hub dataset's field shape (``tests/data/presets``,
hand-written rows, two per preset): the right answer scores 1.0 and a wrong one 0.0 through the
preset's mapping and verifier, and ``rlvr-eval base_only=true`` sweeps it with a tiny model.

The field shapes follow each preset's dataset card (cited in ``conf/task/<preset>.yaml``): list-valued
gold answers (OlympiadBench), float answers (AMC23), nested prompts (DAPO-Math), EvalPlus's numpy test
scripts, LiveCodeBench's JSON-text public cases, compressed private cases and LeetCode metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.test_datasets import PRESETS, run_config, scored_gold
from train.tasks import load_task

FIXTURES = Path(__file__).resolve().parent / "data" / "presets"
DATASET_PRESETS = [p for p in PRESETS if p not in ("arithmetic", "routes")]  # the built-in tasks read no files
TRAIN_ONLY = {"dapo_math"}  # no test split: the fixture plays it

# Right and wrong completions per preset, one per fixture row (math: the gold in the template's asked form).
ANSWERS = {
    "gsm8k": (["So she has \\boxed{7} pencils.", "The train goes \\boxed{150} miles."], ["\\boxed{8}", "\\boxed{15}"]),
    "math500": (["\\boxed{\\frac{3}{4}}", "so $x = \\boxed{4}$"], ["\\boxed{\\frac{4}{3}}", "\\boxed{5}"]),
    "minerva_math": (["The voltage is \\boxed{6}.", "\\boxed{9}"], ["\\boxed{5}", "\\boxed{18}"]),
    "olympiadbench": (["\\boxed{(1,6),(2,3)}", "\\boxed{55}"], ["\\boxed{(1,6)}", "\\boxed{45}"]),
    "aime24": (["\\boxed{401}", "\\boxed{24}"], ["\\boxed{2401}", "\\boxed{23}"]),
    "amc23": (["\\boxed{27}", "\\boxed{\\frac{5}{2}}"], ["\\boxed{9}", "\\boxed{2}"]),
    "omni_math": (["\\boxed{7}", "\\boxed{6}"], ["\\boxed{-7}", "\\boxed{3}"]),
    "dapo_math": (["13 + 29 = 42.\nAnswer: 42", "3 * 60 = 180\nAnswer: $180$"], ["Answer: 41", "Answer: 3"]),
    "humaneval": (
        ["```python\ndef add_one(x: int) -> int:\n    return x + 1\n```",
         "```python\nfrom typing import List\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```"],
        ["```python\ndef add_one(x):\n    return x\n```", "```python\ndef total(xs):\n    return len(xs)\n```"],
    ),
    "humaneval_plus": (
        ["```python\ndef add_one(x):\n    return x + 1\n```",
         "```python\ndef mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0\n```"],
        ["```python\ndef add_one(x):\n    return int(x) + 1\n```",  # fails only the extended float input
         "```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```"],
    ),
    "mbpp": (
        ["```python\ndef larger(a, b):\n    return max(a, b)\n```", "```python\nimport math\ndef root(x):\n    return x ** 0.5\n```"],
        ["```python\ndef larger(a, b):\n    return a\n```", "```python\ndef root(x):\n    return x / 2\n```"],
    ),
    "mbpp_plus": (
        ["```python\ndef larger(a, b):\n    return max(a, b)\n```",
         "```python\ndef count_vowels(s):\n    return sum(c.lower() in 'aeiou' for c in s)\n```"],
        ["```python\ndef larger(a, b):\n    return int(max(a, b))\n```",  # passes MBPP's asserts, not the float input
         "```python\ndef count_vowels(s):\n    return sum(c in 'aeiou' for c in s)\n```"],  # fails the upper case input
    ),
    "livecodebench": (
        ["```python\na, b = map(int, input().split())\nprint(a + b)\n```",
         "```python\nclass Solution:\n    def countEven(self, nums: List[int]) -> int:\n        return sum(x % 2 == 0 for x in nums)\n```"],
        ["```python\nprint(5)\n```",  # passes the public case only
         "```python\nclass Solution:\n    def countEven(self, nums: List[int]) -> int:\n        return 2\n```"],
    ),
}


def preset_config(preset: str):
    overrides = [f"task={preset}", f"task.path={FIXTURES / f'{preset}.jsonl'}"]
    if preset in TRAIN_ONLY:
        overrides.append("task.test_split=train")
    return run_config(*overrides)


def test_every_dataset_preset_has_a_fixture_and_answers():
    assert sorted(p.stem for p in FIXTURES.glob("*.jsonl")) == sorted(DATASET_PRESETS) == sorted(ANSWERS)


@pytest.mark.parametrize("preset", DATASET_PRESETS)
def test_right_answers_score_one_and_wrong_ones_zero(preset):
    cfg = preset_config(preset)
    problems = load_task(cfg.task, "test")
    rows = [json.loads(line) for line in (FIXTURES / f"{preset}.jsonl").read_text().splitlines()]
    assert len(problems) == len(rows) == 2
    if cfg.task.id_field:
        assert [p.id for p in problems] == [str(row[cfg.task.id_field]) for row in rows]
    right, wrong = ANSWERS[preset]
    assert scored_gold(problems, right, cfg) == [1.0, 1.0]
    assert scored_gold(problems, wrong, cfg) == [0.0, 0.0]


@pytest.mark.slow
@pytest.mark.parametrize("preset", DATASET_PRESETS)
def test_every_preset_runs_through_rlvr_eval(preset, text_model, tmp_path):
    """``rlvr-eval base_only=true`` with a local model folder and the preset's local file: a new run
    folder holding the base model's pass@k over both problems."""
    run_dir = tmp_path / "run"
    args = ["base_only=true", f"run_dir={run_dir}", "model=hf", f"model.name_or_path={text_model}", "model.dtype=float32",
            f"task={preset}", f"task.path={FIXTURES / f'{preset}.jsonl'}", "eval.n=4", "eval.num_problems=0",
            "eval.max_new_tokens=24", "eval.batch_size=8", "trainer.threads=1", "logger.wandb=false"]  # fmt: skip
    if preset in TRAIN_ONLY:
        args.append("task.test_split=train")
    run_cli("rlvr-eval", args, cwd=tmp_path)
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert summary["checkpoints"] == [] and summary["num_problems"] == 2 and summary["n"] == 4
    assert set(summary["base"]["pass_at_k"]) == {"1", "2", "4"}
    records = [json.loads(line) for f in (run_dir / "eval").glob("records_*.jsonl") for line in f.read_text().splitlines()]
    assert len(records) == 2 and all(r["model"] == "base" and r["n"] == 4 and 0 <= r["correct"] <= 4 for r in records)
    assert json.loads((run_dir / "run.json").read_text())["config"]["task"]["name"] == preset


def test_presets_on_an_existing_run_are_refused_with_the_fix(tmp_path):
    from omegaconf import OmegaConf

    from eval.main import run_config_with_overrides, runs_in
    from train.config import RunConfig
    from train.tracking import write_run_info

    with pytest.raises(FileNotFoundError, match="base_only=true"):
        runs_in(tmp_path)
    write_run_info(tmp_path, "some/base", OmegaConf.to_container(OmegaConf.structured(RunConfig(run_dir=str(tmp_path)))))
    with pytest.raises(ValueError, match=r"task=math500.*base_only=true"):
        run_config_with_overrides(tmp_path, ["task=math500", "eval.n=8"])
    assert run_config_with_overrides(tmp_path, ["run_dir=x", "eval.n=8"]).eval.n == 8
    # presets that only choose how a run is swept or logged apply on top of its config
    cfg = run_config_with_overrides(tmp_path, ["logger=none", "eval=default", "eval.n=8"])
    assert cfg.logger.wandb is False and cfg.eval.n == 8 and cfg.task.name == RunConfig().task.name
    with pytest.raises(ValueError, match="no such preset; known logger presets: none, wandb"):
        run_config_with_overrides(tmp_path, ["logger=nope"])


def test_rlvr_eval_errors_are_one_line_messages(tmp_path):
    """A refused command line ends with the message and exit code 2, not a Python traceback."""
    from omegaconf import OmegaConf

    from train.config import RunConfig
    from train.tracking import write_run_info

    write_run_info(tmp_path, "some/base", OmegaConf.to_container(OmegaConf.structured(RunConfig(run_dir=str(tmp_path)))))
    proc = run_cli("rlvr-eval", [f"run_dir={tmp_path}", "task=math500"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"rlvr-eval: {tmp_path} is a run with its own model and task")


VERIFIER = {"gsm8k": "math", "mbpp": "code"}


@pytest.mark.parametrize("preset", sorted(VERIFIER))
def test_rlvr_train_runs_on_a_dataset_preset(preset, text_model, tmp_path):
    """Two GRPO steps of a local-folder model on a preset's local file: math-verify's worker pool and
    the code sandbox score rollouts inside the loop, a format reward is mixed in, a checkpoint lands."""
    run_dir = tmp_path / "run"
    extra = "boxed_format" if preset == "gsm8k" else "tests.reward_plugins.half"
    run_cli("rlvr-train", [f"run_dir={run_dir}", "model=hf", f"model.name_or_path={text_model}", "model.dtype=float32",
                           f"task={preset}", f"task.path={FIXTURES / f'{preset}.jsonl'}", f"+task.rewards={{{VERIFIER[preset]}:1.0,{extra}:0.5}}",
                           "trainer.total_steps=2", "trainer.prompts_per_step=2", "algorithm.samples_per_prompt=4",
                           "trainer.micro_batch_size=8", "trainer.warmup_steps=0", "trainer.threads=1",
                           "rollout.max_new_tokens=16", "eval.after_train=false", "logger.wandb=false"],
            cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["train/step"] for m in logged] == [1, 2]
    for m in logged:
        assert m[f"reward/{VERIFIER[preset]}"] == m["train/accuracy"]  # gibberish: 0, but measured
        assert f"reward/{extra}" in m
    if preset == "mbpp":  # weight 0.5 x the plugin's 0.5 on every sample, plus the verdicts: the mix reached the loop
        assert all(m["train/reward_mean"] == pytest.approx(0.25 + m["train/accuracy"]) for m in logged)
    assert (run_dir / "checkpoints" / "step_000002" / "config.json").exists()
