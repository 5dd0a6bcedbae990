"""Prompt limits at load time: prompts longer than task.max_prompt_tokens (by default the model's context
minus the response budget) are dropped and counted or refused, in training and in the pass@k sweep."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.cli import run_cli
from tests.conftest import TEXT_MODEL_CONTEXT
from tests.test_datasets import run_config
from train.config import ConfigError
from train.models import load_tokenizer
from train.tasks import Problem
from train.tasks.limits import context_length, fit_prompts, prompt_lengths, prompt_limit

HUGE = "x" * 30_000_000  # the 30 MB question that once reached a 256-token model


def _cfg(model, *overrides):
    return run_config("model=hf", f"model.name_or_path={model}", "task=gsm8k", "task.answer_extract=none", *overrides)


def _problems(*prompts):
    return [Problem(str(i), prompt, "1") for i, prompt in enumerate(prompts)]


def test_the_default_limit_is_the_context_minus_the_response_budget(text_model):
    tokenizer = load_tokenizer(text_model, _cfg(text_model).model)
    cfg = _cfg(text_model, "rollout.max_new_tokens=40", "eval.max_new_tokens=100")
    assert context_length(cfg, str(text_model), tokenizer) == TEXT_MODEL_CONTEXT == 1024  # its max_position_embeddings
    train, test = prompt_limit(cfg, "train", str(text_model), tokenizer), prompt_limit(cfg, "test", str(text_model), tokenizer)
    assert (train.tokens, test.tokens) == (984, 924)
    assert train.why == "the model's 1024-token context - rollout.max_new_tokens=40"
    vllm = _cfg(text_model, "rollout.engine=vllm", "rollout.vllm.max_model_len=512")  # vLLM's own cap counts too
    assert context_length(vllm, str(text_model), tokenizer) == 512
    assert prompt_limit(_cfg(text_model, "task.max_prompt_tokens=50"), "train", str(text_model), tokenizer).tokens == 50
    with pytest.raises(ConfigError, match=r"task.max_prompt_tokens=1000 \+ rollout.max_new_tokens=64 exceed the model's "
                                          r"1024-token context; set task.max_prompt_tokens to at most 960"):  # fmt: skip
        prompt_limit(_cfg(text_model, "task.max_prompt_tokens=1000"), "train", str(text_model), tokenizer)
    with pytest.raises(ConfigError, match=r"eval.max_new_tokens=1024 leaves no room for a prompt"):
        prompt_limit(_cfg(text_model, "eval.max_new_tokens=1024"), "test", str(text_model), tokenizer)


def test_lengths_are_counted_as_the_engine_feeds_them(text_model):
    """One token per character plus BOS (the built-in tokenizer); the chat template's own tokens count."""
    tokenizer = load_tokenizer(text_model, _cfg(text_model).model)
    assert prompt_lengths(["abc", "x" * 100], tokenizer, limit=200, chat=False) == [4, 101]
    assert prompt_lengths(["x" * 2001], tokenizer, limit=200, chat=False) == [None]  # > 200 x 5 x 2 characters: not tokenized
    tokenizer.chat_template = "{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}<assistant>"
    assert prompt_lengths(["abc"], tokenizer, limit=200, chat=True) == [len("<user>abc</user><assistant>")]


def test_overlong_prompts_are_dropped_and_counted(text_model, capsys):
    tokenizer = load_tokenizer(text_model, _cfg(text_model).model)
    cfg = _cfg(text_model, "task.max_prompt_tokens=20")
    problems = _problems("short", "y" * 20, HUGE, "y" * 19, "z" * 50)
    limit = prompt_limit(cfg, "train", str(text_model), tokenizer)
    start = time.monotonic()
    kept = fit_prompts(problems, cfg, "train", limit, tokenizer)
    assert time.monotonic() - start < 5  # the 30 MB prompt is never tokenized (that takes a minute and 6 GB)
    assert [p.id for p in kept] == ["0", "3"]  # "y" * 20 is 21 tokens with BOS
    out = capsys.readouterr().out
    assert ("task gsm8k, train split: dropped 3 of 5 prompts longer than 20 tokens (task.max_prompt_tokens; see "
            "task.max_prompt_tokens, task.overlong_prompts): ids 1 (21 tokens), 2 (30000000 characters), 4 (51 tokens)") in out


def test_overlong_prompts_are_refused_when_asked(text_model):
    tokenizer = load_tokenizer(text_model, _cfg(text_model).model)
    cfg = _cfg(text_model, "task.overlong_prompts=error", "rollout.max_new_tokens=968")
    limit = prompt_limit(cfg, "train", str(text_model), tokenizer)
    with pytest.raises(ConfigError, match=r"task gsm8k, train split: 1 of 2 prompts are longer than 56 tokens \(the model's "
                                          r"1024-token context - rollout.max_new_tokens=968\): ids 1 \(61 tokens\); set "
                                          r"task.overlong_prompts=drop to skip them, or raise task.max_prompt_tokens"):  # fmt: skip
        fit_prompts(_problems("ok", "w" * 60), cfg, "train", limit, tokenizer)
    with pytest.raises(ConfigError, match=r"every one of the 1 prompts is longer than 56 tokens"):
        fit_prompts(_problems("w" * 60), _cfg(text_model, "rollout.max_new_tokens=968"), "train", limit, tokenizer)


def _dataset(folder, questions):
    folder.mkdir()
    rows = [{"question": q, "answer": str(i)} for i, q in enumerate(questions)]
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_the_sweep_evaluates_only_prompts_that_fit(text_model, tmp_path):
    from eval.sweep import eval_problems

    data = _dataset(tmp_path / "data", ["What is 1+1?", "q" * 1000, "What is 2+2?", "What is 3+3?"])
    cfg = _cfg(text_model, f"task.path={data}", "eval.num_problems=2")
    assert [p.id for p in eval_problems(cfg)] == ["0", "2"]  # the first two that fit, the long one dropped
    with pytest.raises(ConfigError, match=r"test split: 1 of 4 prompts are longer than 960 tokens"):
        eval_problems(_cfg(text_model, f"task.path={data}", "task.overlong_prompts=error"))


def test_rlvr_train_drops_a_30_mb_question_at_load_time(text_model, tmp_path, monkeypatch):
    """The drill: a 30 MB question in a small-context model's training data. Before, the tokenizer warned
    and the process was killed for memory after 130 s; now the row is dropped and training runs."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))  # the 30 MB row's Arrow copy stays here
    data = _dataset(tmp_path / "data", ["What is 1+1?", HUGE, "What is 2+2?"])
    run_dir = tmp_path / "run"
    proc = run_cli("rlvr-train", [f"run_dir={run_dir}", "model=hf", f"model.name_or_path={text_model}", "model.dtype=float32",
                                  "task=gsm8k", f"task.path={data}", "task.answer_extract=none", "trainer.total_steps=1",
                                  "trainer.prompts_per_step=2", "algorithm.samples_per_prompt=2", "trainer.micro_batch_size=4",
                                  "rollout.max_new_tokens=8", "eval.after_train=false", "logger.wandb=false"],
                   cwd=tmp_path, timeout=180)  # fmt: skip
    assert "task gsm8k, train split: dropped 1 of 3 prompts longer than 1016 tokens" in proc.stdout
    assert re.search(r"ids 1 \(300000\d\d characters\)", proc.stdout)  # the question and the template's instruction
    assert [json.loads(line)["train/step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1]
