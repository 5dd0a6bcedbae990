"""The distillation arm (algorithm=distill): the SFT loss by hand, its split invariance, the pairs file,
and smoke runs through rlvr-train (train, checkpoint, resume, sweep; a JSONL of pairs; a multirun beside GRPO)."""

from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

from tests.cli import TINY, metrics, run_cli
from train.config import BatchPlan, ConfigError
from train.distill import problems_of_pairs, read_pairs, sft_update
from train.sft import IGNORE, collate, completion_loss, tokenize_pairs
from train.tracking import read_run_info

DISTILL = ["algorithm=distill", "trainer.total_steps=4", "trainer.save_every=2"]
EVAL = ["eval.n=8", "eval.num_problems=6", "eval.batch_size=24"]


def test_completion_loss_by_hand():
    """Vocabulary of 3, one row of 4 tokens whose first two are prompt: only positions 1 and 2 count."""
    ln = math.log
    logits = torch.tensor([[[5.0, -3.0, 0.0],  # predicts label 1: a prompt token, masked
                            [0.0, 0.0, ln(3.0)],  # predicts label 2 = token 2: p = 3/5
                            [ln(2.0), ln(2.0), 0.0],  # predicts label 3 = token 1: p = 2/5
                            [9.0, 9.0, 9.0]]])  # predicts nothing (the last position)
    labels = torch.tensor([[IGNORE, IGNORE, 2, 1]])
    total, count = completion_loss(logits, labels)
    assert count == 2
    assert total.item() == pytest.approx(-ln(3 / 5) - ln(2 / 5), abs=1e-6)
    logits[0, 0] = torch.tensor([-7.0, 4.0, 1.0])  # the masked prompt position changes nothing
    assert completion_loss(logits, labels)[0].item() == pytest.approx(-ln(3 / 5) - ln(2 / 5), abs=1e-6)


def test_completion_loss_is_the_loss_the_base_was_built_with(tiny_model, tiny_tokenizer):
    """Summed over completion tokens and divided by their count, it is transformers' causal-LM loss on
    tokenize_pairs' labels: the loss train.sft trains the base with (prompt masked, EOS kept)."""
    pairs = [("12+34=", "2+4=6,1+3=4#46"), ("5+7=", "5+7=12#12")]
    input_ids, mask, labels = collate(tokenize_pairs(tiny_tokenizer, pairs), tiny_tokenizer.pad_token_id)
    out = tiny_model(input_ids=input_ids, attention_mask=mask, labels=labels)
    total, count = completion_loss(out.logits, labels)
    completion_tokens = sum(len(c) + 1 for _, c in pairs)  # one token per character, plus EOS
    assert count == completion_tokens
    assert (total / count).item() == pytest.approx(out.loss.item(), rel=1e-5)


def _plan(grad_accum: int, samples: int = 4) -> BatchPlan:
    return BatchPlan(world_size=1, samples_per_step=samples, prompts_per_process=samples, samples_per_process=samples,
                     mini_batches=1, samples_per_mini_batch_per_process=samples, grad_accum=grad_accum)


def test_sft_update_is_the_token_mean_over_the_batch_however_it_is_split(tiny_model, tiny_tokenizer):
    """One step on 4 pairs of different lengths: 1 micro-batch of 4, or 4 of 1, give the same update
    (SGD, so the update is the gradient), equal to the gradient of the token-mean loss over all 4."""
    pairs = [("1+2=", "1+2=3#3"), ("47+586=", "7+6=13,4+8+1=13,0+5+1=6#633"), ("9+9=", "9+9=18#18"), ("0+0=", "#0")]
    sequences = tokenize_pairs(tiny_tokenizer, pairs)
    input_ids, mask, labels = collate(sequences, tiny_tokenizer.pad_token_id)
    reference = copy.deepcopy(tiny_model)
    reference(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()  # token-mean over all 4
    expected = {name: p.detach() - 0.5 * p.grad for name, p in reference.named_parameters()}
    for grad_accum in (1, 4):
        acc = Accelerator(cpu=True, gradient_accumulation_steps=grad_accum)
        model = copy.deepcopy(tiny_model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        model, optimizer = acc.prepare(model, optimizer)
        out = sft_update(acc, model, optimizer, scheduler, sequences, _plan(grad_accum), max_grad_norm=0.0,
                         pad_id=tiny_tokenizer.pad_token_id, generator=torch.Generator().manual_seed(0))
        assert out["distill/completion_tokens"] == sum(len(c) + 1 for _, c in pairs)
        for name, p in acc.unwrap_model(model).named_parameters():
            torch.testing.assert_close(p.detach(), expected[name], rtol=1e-4, atol=1e-6, msg=f"{grad_accum}: {name}")


def test_pairs_file_errors_say_what_is_wrong(tmp_path):
    good = tmp_path / "pairs.jsonl"
    good.write_text('{"prompt": "1+2=", "completion": "#3"}\n\n{"prompt": "1+2=", "completion": "1+2=3#3"}\n')
    assert read_pairs(str(good), "prompt", "completion") == [("1+2=", "#3"), ("1+2=", "1+2=3#3")]
    assert [p.metadata["completions"] for p in problems_of_pairs(read_pairs(str(good), "prompt", "completion"))] == [
        ["#3", "1+2=3#3"]]
    cases = {
        "missing.jsonl": (None, "no such file"),
        "pairs.csv": ("prompt,completion\n", "ends in .jsonl or .parquet"),
        "broken.jsonl": ('{"prompt": "1+2=", "completion": "#3"}\n{"prompt": \n', "line 2 is not JSON"),
        "fields.jsonl": ('{"question": "1+2=", "completion": "#3"}\n', "row 1 has no string field 'prompt' \\(its fields: question, completion\\)"),
        "empty.jsonl": ("\n", "holds no rows"),
        "number.jsonl": ('{"prompt": "1+2=", "completion": 3}\n', "row 1 has no string field 'completion'"),
    }
    for name, (text, message) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=message):
            read_pairs(str(tmp_path / name), "prompt", "completion")


def test_pairs_file_reads_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"q": ["1+2=", "3+4="], "a": ["#3", "#7"]}), tmp_path / "pairs.parquet")
    assert read_pairs(str(tmp_path / "pairs.parquet"), "q", "a") == [("1+2=", "#3"), ("3+4=", "#7")]


def _weights(folder):
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


@pytest.fixture(scope="module")
def distilled_run(tmp_path_factory, tiny_cache):
    """4 distillation steps from the task's stronger built-in teacher, checkpoints at 2 and 4, then the sweep."""
    root = tmp_path_factory.mktemp("distill")
    run_dir = root / "run"
    proc = run_cli("rlvr-train", [f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}", *TINY, *DISTILL, *EVAL], cwd=root)
    return root, run_dir, proc


def test_distill_trains_checkpoints_and_sweeps(distilled_run):
    root, run_dir, proc = distilled_run
    logged = [m for m in metrics(run_dir) if "distill/loss" in m]
    assert [m["train/step"] for m in logged] == [1, 2, 3, 4]
    assert all(math.isfinite(m["distill/loss"]) and m["distill/completion_tokens"] > 0 for m in logged)
    base = _weights(read_run_info(run_dir)["base_model"])
    final = _weights(run_dir / "checkpoints" / "step_000004")
    assert any(not torch.equal(base[k], final[k]) for k in base), "no parameter moved"
    meta = json.loads((run_dir / "checkpoints" / "step_000002" / "rlvr_checkpoint.json").read_text())
    assert meta["step"] == 2 and "distill/loss" in meta["metrics"] and meta["config"]["algorithm"]["trainer"] == "distill"
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert [c["step"] for c in summary["checkpoints"]] == [2, 4] and summary["n"] == 8
    assert "step_000004" in proc.stdout


def test_distill_resume_reproduces_the_uninterrupted_run(distilled_run, tiny_cache):
    root, run_dir, _ = distilled_run
    crashed = root / "crashed"
    shutil.copytree(run_dir, crashed)
    shutil.rmtree(crashed / "checkpoints" / "step_000004")
    shutil.rmtree(crashed / "eval")
    run_cli("rlvr-train", [f"run_dir={crashed}", f"model.cache_dir={tiny_cache}", *TINY, *DISTILL,
                           "eval.after_train=false", "resume=true"], cwd=root)
    reference = {m["train/step"]: m for m in metrics(run_dir) if "distill/loss" in m}
    resumed = {m["train/step"]: m for m in metrics(crashed) if "distill/loss" in m}
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step]["distill/loss"] == pytest.approx(reference[step]["distill/loss"], rel=1e-5)
    a, b = _weights(run_dir / "checkpoints/step_000004"), _weights(crashed / "checkpoints/step_000004")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_distill_learns_from_a_jsonl_of_pairs(tmp_path, tiny_cache):
    """Pairs from 'any model': every prompt answered with one fixed completion. Distillation drives the
    SFT loss on them down, and afterwards the model writes that completion greedily."""
    pairs = tmp_path / "teacher.jsonl"
    rows = [{"q": f"{a}+{b}=", "a": f"#{a + b}"} for a, b in [(1, 2), (3, 4), (5, 1), (2, 2)]]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    run_cli("rlvr-train", [f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}", *TINY, "algorithm=distill",
                           f"algorithm.distill.path={pairs}", "algorithm.distill.prompt_field=q",
                           "algorithm.distill.completion_field=a", "algorithm.samples_per_prompt=1", "trainer.micro_batch_size=4",
                           "trainer.total_steps=40", "trainer.save_every=40", "trainer.lr=3e-3",
                           "eval.after_train=false"], cwd=tmp_path)
    losses = [m["distill/loss"] for m in metrics(run_dir) if "distill/loss" in m]
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5, losses
    from transformers import AutoTokenizer

    folder = run_dir / "checkpoints" / "step_000040"
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    for row in rows:
        ids = tok(row["q"], return_tensors="pt").input_ids
        out = model.generate(ids, do_sample=False, max_new_tokens=8)
        assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == row["a"]


def test_distill_config_errors_stop_at_start_up(tmp_path, tiny_cache):
    bad = [
        (["algorithm.distill.path=/nowhere/pairs.jsonl"], "algorithm.distill.path=/nowhere/pairs.jsonl"),
        (["algorithm.ppo_epochs=2"], "set algorithm.ppo_epochs=1"),
        (["algorithm.trainer=sft"], "algorithm.trainer='sft' is unknown; choose one of: distill, rl"),
    ]
    for extra, message in bad:
        proc = run_cli("rlvr-train", [f"run_dir={tmp_path / 'run'}", f"model.cache_dir={tiny_cache}", *TINY,
                                      "algorithm=distill", *extra], cwd=tmp_path, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


def test_rlvr_study_trains_grpo_and_distill_and_compares_them(tmp_path, tiny_cache):
    """`rlvr-study`: a multirun of GRPO and distillation from one base, ending with their comparison and report."""
    sweep_dir = tmp_path / "study"
    evals = ["eval.n=4", "eval.num_problems=4", "eval.batch_size=16", "trainer.total_steps=2"]
    proc = run_cli("rlvr-study", [f"hydra.sweep.dir={sweep_dir}", f"model.cache_dir={tiny_cache}", *TINY, *evals], cwd=tmp_path)
    comparison = json.loads((sweep_dir / "comparison.json").read_text())
    assert [g["label"] for g in comparison["groups"]] == ["algorithm=grpo", "algorithm=distill"]
    assert all(g["step"] == 2 and len(g["runs"]) == 1 for g in comparison["groups"])
    assert "algorithm=distill (step 2):" in proc.stdout and (sweep_dir / "report.md").exists()
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0_grpo", "1_distill"]
