"""Real-dataset tasks: the presets compose, local copies load, gold solutions score 1.0 through ``score``.

The data are the read-only copies in ``/work/shared/data`` (never copied into the repo); tests that
need them skip, saying so, when they are absent. Hub loading is not exercised (no network here).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from algorithms.batch import Rollouts
from train.config import RunConfig, TaskConfig, check, register_configs
from train.rewards import WeightedRewards
from train.rewards.code import _COLUMNS as CODE_COLUMNS
from train.sampling import score
from train.tasks import TASKS, Problem, load_task
from train.tasks.datasets import EXTRACTORS
from train.tasks.templates import BOXED_INSTRUCTION, TEMPLATES, apply_chat, chat_problems

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CONF_TASK = Path(__file__).resolve().parents[1] / "conf" / "task"
PRESETS = sorted(p.stem for p in CONF_TASK.glob("*.yaml"))


def needs(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"local data copy {path} is absent (read-only copies live in /work/shared/data)")
    return path


def run_config(*overrides: str) -> RunConfig:
    """The run config the real presets compose to, through Hydra and the structured schema."""
    register_configs()
    with initialize_config_module("conf", version_base=None):
        return OmegaConf.to_object(compose("config", overrides=list(overrides)))


def scored_gold(problems: list[Problem], completions: list[str], cfg: RunConfig) -> list[float]:
    """``train.sampling.score`` on one completion per problem (the rollout tensors are placeholders)."""
    n = len(completions)
    empty = torch.zeros(n, 1, dtype=torch.long)
    rollouts = Rollouts(empty, empty, empty, torch.ones(n, 1, dtype=torch.long), torch.zeros(n, 1),
                        torch.arange(n), completions, torch.zeros(n, dtype=torch.bool))  # fmt: skip
    return score(rollouts, problems, WeightedRewards.of_task(cfg.task), cfg).rewards.tolist()


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(preset):
    cfg = run_config(f"task={preset}")
    task = cfg.task
    assert task.name == preset
    check(cfg, world_size=1)  # the reward is known
    assert task.loader in TASKS and task.template in TEMPLATES and task.answer_extract in EXTRACTORS
    if task.loader == "dataset":
        assert task.dataset and task.prompt_field and (task.train_split or task.test_split)
        assert "# Hub: " in (CONF_TASK / f"{preset}.yaml").read_text()  # the mapping says where it comes from
    if task.reward == "code":
        template_only = {"starter_code"}  # shown in the prompt, ignored by the verifier
        assert task.columns and set(task.columns) <= set(CODE_COLUMNS) | template_only and task.template == "code"
        assert set(task.column_decoders) <= set(task.columns)
    if task.reward == "math":
        assert task.answer_field and not task.columns
    assert run_config(f"task={preset}", "task.path=/some/copy.jsonl").task.path == "/some/copy.jsonl"


def test_gsm8k_from_a_local_folder_extracts_the_answer_after_hashes():
    folder = needs("gsm8k")
    cfg = run_config("task=gsm8k", f"task.path={folder}")
    train, test = load_task(cfg.task, "train"), load_task(cfg.task, "test")
    assert (len(train), len(test)) == (7473, 1319)
    assert len({p.id for p in test}) == len(test)
    raw = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()[:8]]
    assert [p.prompt for p in test[:8]] == [f"{r['question']}\n{BOXED_INSTRUCTION}" for r in raw]
    assert test[0].answer == "18" and all("#" not in p.answer and p.answer for p in test)
    gold = [f"Reasoning... so the answer is $\\boxed{{{p.answer}}}$." for p in test[:8]]
    assert scored_gold(test[:8], gold, cfg) == [1.0] * 8
    assert scored_gold(test[:2], ["\\boxed{-12345}"] * 2, cfg) == [0.0, 0.0]


def test_math500_from_a_local_file_scores_the_reference_solutions():
    file = needs("math500", "test.jsonl")
    cfg = run_config("task=math500", f"task.path={file}")
    test = load_task(cfg.task, "test")
    raw = [json.loads(line) for line in file.read_text().splitlines()]
    assert len(test) == 500 and len({p.id for p in test}) == 500 and test[0].id == raw[0]["unique_id"]
    assert [p.answer for p in test] == [r["answer"].strip() for r in raw]
    assert all(p.prompt.endswith(BOXED_INSTRUCTION) for p in test)
    assert scored_gold(test[:6], [r["solution"] for r in raw[:6]], cfg) == [1.0] * 6
    with pytest.raises(ValueError, match=r"no train split \(task.train_split=null\)"):
        load_task(cfg.task, "train")
    # the preset tags each problem with its level and subject, for the per-subset breakdowns
    assert all(p.metadata["tags"] == {"level": str(r["level"]), "subject": r["subject"]} for p, r in zip(test, raw))
    assert {p.metadata["tags"]["level"] for p in test} == {"1", "2", "3", "4", "5"}


def test_mbpp_carries_its_tests_to_the_code_verifier():
    file = needs("mbpp", "sanitized-mbpp.json")
    cfg = run_config("task=mbpp", f"task.path={file}")
    test = load_task(cfg.task, "test")
    raw = json.loads(file.read_text())
    assert len(test) == 427 and len({p.id for p in test}) == 427 and test[0].id == str(raw[0]["task_id"])
    first = test[0]
    assert set(first.metadata) == {"test_list", "test_imports"} and first.metadata["test_list"] == raw[0]["test_list"]
    assert first.prompt.startswith(raw[0]["prompt"]) and raw[0]["test_list"][0] in first.prompt and "```python" in first.prompt
    with_imports = next(i for i, r in enumerate(raw) if r["test_imports"])  # a task whose tests need an import
    picked = [test[i] for i in (0, 1, 2, with_imports)]
    gold = [f"Here it is:\n```python\n{p.answer}\n```\n" for p in picked]
    assert scored_gold(picked, gold, cfg) == [1.0] * 4
    assert scored_gold(picked[:1], ["```python\ndef similar_elements(a, b):\n    return ()\n```"], cfg) == [0.0]


def test_a_missing_field_lists_the_fields_the_rows_have():
    file = needs("gsm8k", "test.jsonl")
    cfg = run_config("task=gsm8k", f"task.path={file}", "task.prompt_field=problem")
    with pytest.raises(ValueError, match=r"task.prompt_field: the rows have no field 'problem'; available fields: answer, question"):
        load_task(cfg.task, "test")


def test_a_missing_file_names_the_path(tmp_path):
    cfg = run_config("task=gsm8k", f"task.path={tmp_path / 'nowhere.jsonl'}")
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_task(cfg.task, "test")
    cfg = run_config("task=gsm8k", f"task.path={tmp_path}")  # a folder without test.jsonl
    with pytest.raises(FileNotFoundError, match=r"test\.jsonl or .*test\.json or .*test\.parquet"):
        load_task(cfg.task, "test")


def test_nested_fields_renamed_columns_and_ids(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "reward_model": {"ground_truth": 27.0 + i},
             "extra_info": {"index": f"id{i % 2}"}, "public": "[]"} for i in range(3)]  # fmt: skip
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = TaskConfig(name="nested", loader="dataset", path=str(tmp_path), prompt_field="prompt.0.content",
                      answer_field="reward_model.ground_truth", columns=["tests"], column_fields={"tests": "public"})  # fmt: skip
    problems = load_task(task, "test")
    assert [(p.id, p.prompt, p.answer, dict(p.metadata)) for p in problems[:2]] == [
        ("0", "q0", "27", {"tests": "[]"}), ("1", "q1", "28", {"tests": "[]"})]  # fmt: skip
    task.id_field = "extra_info.index"
    with pytest.raises(ValueError, match="not unique"):
        load_task(task, "test")
    task.template = "nope"
    with pytest.raises(KeyError, match="known: boxed, code, plain, r1"):
        load_task(task, "test")


def test_templates():
    assert TEMPLATES["plain"]("q", {}) == "q"
    r1 = TEMPLATES["r1"]("What is 2+2?", {})
    assert "<think> </think> and <answer> </answer> tags" in r1 and r1.endswith("User: What is 2+2?\nAssistant:")
    humaneval = TEMPLATES["code"]("def f(x):\n    '''Add one.'''\n", {"test": "def check(c): ...", "entry_point": "f"})
    assert "```python\ndef f(x):" in humaneval and "def check" not in humaneval  # HumanEval hides its tests
    stdio = TEMPLATES["code"]("Print the sum of two numbers.", {"tests": "[]"})
    assert "standard input" in stdio and "```python" in stdio


def test_apply_chat_wraps_user_turns_and_refuses_tokenizers_without_a_template(tiny_tokenizer):
    with pytest.raises(ValueError, match="task.chat=false"):
        apply_chat(["q"], tiny_tokenizer)
    tiny_tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert apply_chat(["1+1=", "2+2="], tiny_tokenizer) == ["<user>1+1=</user><assistant>", "<user>2+2=</user><assistant>"]
    problem = Problem("a", "1+1=", "2", {"test_list": []})
    assert chat_problems([problem], tiny_tokenizer)[0] == Problem("a", "<user>1+1=</user><assistant>", "2")


def test_encoded_columns_are_decoded_and_a_pickle_that_names_code_is_refused(tmp_path):
    """LiveCodeBench packs hidden tests as base64(zlib(pickle)): decoded as data; a pickle that would
    call a function (here: write a file) is refused before anything runs."""
    import base64
    import pickle
    import zlib

    class Exploit:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned.txt"), "w"))

    def pack(obj):
        return base64.b64encode(zlib.compress(pickle.dumps(obj))).decode()

    rows = [{"q": "a", "public": '[{"input": "1", "output": "1"}]', "private": pack('[{"input": "2", "output": "2"}]'),
             "meta": '{"func_name": "f"}'},
            {"q": "b", "public": "[]", "private": pack(Exploit()), "meta": "{}"}]  # fmt: skip
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = TaskConfig(name="lcb", loader="dataset", reward="code", path=str(tmp_path / "rows.jsonl"), train_split=None,
                      prompt_field="q", answer_field=None, columns=["tests", "private_tests", "fn_name"],
                      column_fields={"tests": "public", "private_tests": "private", "fn_name": "meta"},
                      column_decoders={"tests": "json", "private_tests": "livecodebench_tests", "fn_name": "livecodebench_fn_name"})  # fmt: skip
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        load_task(task, "test")
    assert not (tmp_path / "pwned.txt").exists()
    (tmp_path / "rows.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (problem,) = load_task(task, "test")
    assert problem.metadata == {"tests": [{"input": "1", "output": "1"}], "private_tests": [{"input": "2", "output": "2"}],
                                "fn_name": "f"}  # fmt: skip
    task.column_decoders = {"tests": "yaml"}
    with pytest.raises(KeyError, match="known: json, livecodebench_fn_name, livecodebench_tests"):
        load_task(task, "test")


@pytest.mark.parametrize("question, shown", [(None, "None"), (123, "123"), ("  ", "'  '"), ({"text": "q"}, "a dict")])
def test_a_question_that_is_not_text_names_the_file_and_row(tmp_path, question, shown):
    """A null or numeric question used to become the prompt "None" / "123"."""
    rows = [{"question": "What is 1+1?", "answer": "2"}, {"question": question, "answer": "3"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = TaskConfig(name="t", loader="dataset", path=str(tmp_path))
    with pytest.raises(ValueError, match=rf"task.path: {tmp_path / 'test.jsonl'} \(the test split\), row 1 \(counting "
                                         rf"from 0\): task.prompt_field='question' is {re.escape(shown)}, not the text "
                                         r"of a question; fix or remove the row"):  # fmt: skip
        load_task(task, "test")


@pytest.mark.parametrize("content", ["", "\n\n"], ids=["zero bytes", "blank lines"])
def test_an_empty_file_names_itself_and_the_split(tmp_path, content):
    """A zero-byte file used to stop with a bare StopIteration from datasets' JSON reader."""
    (tmp_path / "train.jsonl").write_text(content)
    task = TaskConfig(name="t", loader="dataset", path=str(tmp_path))
    with pytest.raises(ValueError, match=rf"task.path: {tmp_path / 'train.jsonl'} \(the train split\) (is empty|holds no rows)"):
        load_task(task, "train")


def test_a_malformed_row_names_the_file(tmp_path):
    (tmp_path / "test.jsonl").write_text('{"question": "a", "answer": "1"}\n{"question": "b", "ans\n')
    with pytest.raises(ValueError, match=r"test.jsonl \(the test split\) could not be read: JSON parse error.*fix or remove"):
        load_task(TaskConfig(name="t", loader="dataset", path=str(tmp_path)), "test")


def test_a_missing_split_says_which_ones_exist(tmp_path):
    """A hub-layout dataset (here a local folder given as task.dataset) without the configured split."""
    (tmp_path / "train.jsonl").write_text('{"question": "a", "answer": "1"}\n')
    task = TaskConfig(name="t", loader="dataset", dataset=str(tmp_path), test_split="validation")
    with pytest.raises(ValueError, match=r"Unknown split \"validation\". Should be one of \['train'\]; set task.test_split "
                                         r"to one of them, or to null if the task has no test split"):  # fmt: skip
        load_task(task, "test")
    assert [p.prompt for p in load_task(task, "train")] == ["a"]
