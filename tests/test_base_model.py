"""The built-in base model: build, cache, load, and the SFT stage that trains it."""

from __future__ import annotations

import dataclasses
import json
import random
import threading

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from train.base_model import _build_record, _digest, build_model, build_tokenizer, ensure_builtin_base
from train.config import BuiltinModelConfig, ModelConfig, TaskConfig
from train.sft import IGNORE, collate, sft, tokenize_pairs
from train.tasks import load_task
from train.tasks.arithmetic import ALPHABET, teacher_trace

torch.set_num_threads(1)

TINY = BuiltinModelConfig(
    hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, sft_steps=3, sft_batch_size=4, sft_traces=16
)
TASK = TaskConfig(train_size=100, test_size=10)


def _model_cfg(cache_dir) -> ModelConfig:
    return ModelConfig(cache_dir=str(cache_dir), builtin=TINY)


def test_build_loads_with_auto_classes_then_hits_the_cache(tmp_path, capsys):
    folder = ensure_builtin_base(_model_cfg(tmp_path), TASK, progress=False)
    assert "building" in capsys.readouterr().out
    build = json.loads((folder / "build.json").read_text())
    assert build["builtin"]["hidden_size"] == 16 and build["task"]["train_size"] == 100
    assert build["seconds"] > 0 and build["final_sft_loss"] > 0

    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert model.config.tie_word_embeddings and model.config.hidden_size == 16
    assert model.generation_config.eos_token_id == tok.eos_token_id == 2
    assert model.generation_config.pad_token_id == tok.pad_token_id == 0
    text = "12+34=2+4=6,1+3=4#46"
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
    enc = tok(["12+34=", "1234+5="], return_tensors="pt", padding=True)
    out = model.generate(**enc, do_sample=False, max_new_tokens=5)
    assert out.shape[0] == 2 and enc.input_ids.shape[1] < out.shape[1] <= enc.input_ids.shape[1] + 5

    mtime = (folder / "build.json").stat().st_mtime_ns
    assert ensure_builtin_base(_model_cfg(tmp_path), TASK, progress=False) == folder
    assert "loading cached" in capsys.readouterr().out
    assert (folder / "build.json").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name, folder.name + ".lock"]  # no temp folders


def test_concurrent_callers_build_once_and_crash_leftovers_are_removed(tmp_path, capsys):
    name = "builtin-" + _digest(_build_record(TINY, TASK))
    (tmp_path / f".tmp-{name}-crashed").mkdir()  # what a killed build leaves behind
    folders = []
    threads = [
        threading.Thread(target=lambda: folders.append(ensure_builtin_base(_model_cfg(tmp_path), TASK, progress=False)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = capsys.readouterr().out
    assert out.count("building") == 1 and len(set(folders)) == 1 and len(folders) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, name + ".lock"]


def test_cache_key_covers_what_changes_the_build_only():
    key = lambda m, t: _digest(_build_record(m, t))  # noqa: E731
    base = key(TINY, TASK)
    assert key(dataclasses.replace(TINY, sft_lr=1e-2), TASK) != base
    assert key(TINY, TaskConfig(train_size=100, test_size=10, slip_rate=0.1)) != base
    assert key(TINY, TaskConfig(train_size=100, test_size=99, reward="other")) == base  # no effect on SFT data
    unrelated = dict(template="boxed", chat=True, path="x.jsonl", columns=["test_list"])  # dataset-task fields
    assert key(TINY, TaskConfig(train_size=100, test_size=10, **unrelated)) == base
    for name in ("seed", "min_digits", "max_digits", "slip_concentration"):
        changed = {"seed": 7, "min_digits": 1, "max_digits": 5, "slip_concentration": 9.0}[name]
        assert key(TINY, dataclasses.replace(TASK, **{name: changed})) != base, name


def test_sft_masks_the_prompt_and_appends_eos():
    tok = build_tokenizer(ALPHABET)
    (ids, labels), = tokenize_pairs(tok, [("12+3=", "2+3=5,1+0=1#15")])
    prompt_len = len("12+3=") + 1  # + <bos>
    assert labels[:prompt_len] == [IGNORE] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:] and ids[-1] == tok.eos_token_id
    input_ids, mask, padded = collate([(ids, labels), (ids[:4], labels[:4])], tok.pad_token_id)
    assert mask[1].tolist() == [1] * 4 + [0] * (len(ids) - 4)  # right-padded
    assert (padded[1, 4:] == IGNORE).all() and (input_ids[1, 4:] == tok.pad_token_id).all()


def test_sft_loss_decreases_on_a_fixed_small_dataset():
    tok = build_tokenizer(ALPHABET)
    model = build_model(BuiltinModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), tok)
    problems = load_task(TaskConfig(train_size=64, test_size=10, slip_rate=0.0), "train")
    rng = random.Random(0)
    examples = [(p.prompt, teacher_trace(p, rng)) for p in problems]
    losses = sft(model, tok, examples, steps=100, batch_size=16, lr=1e-2, seed=0, progress=False)
    assert len(losses) == 100 and all(loss == loss for loss in losses)  # no NaN
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert not model.training


def test_sft_refuses_a_tokenizer_without_eos():
    tok = build_tokenizer(ALPHABET)
    model = build_model(TINY, tok)
    tok.eos_token = None
    with pytest.raises(ValueError, match="EOS"):
        sft(model, tok, [("1+2=", "#3")], steps=1, batch_size=1, lr=1e-3, seed=0, progress=False)
