"""Shared fixtures: a tiny random Llama over the built-in task's characters (no SFT, no cache)."""

import pytest
import torch

from train.base_model import build_model, build_tokenizer
from train.config import BuiltinModelConfig
from train.tasks.arithmetic import ALPHABET


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # two threads on two busy cores run many times slower than one


@pytest.fixture
def tiny_tokenizer():
    return build_tokenizer(ALPHABET)


@pytest.fixture
def tiny_model(tiny_tokenizer):
    cfg = BuiltinModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=3)
    return build_model(cfg, tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """One model cache per test session: the TINY built-in base is built once and shared."""
    return tmp_path_factory.mktemp("model-cache")


TEXT_MODEL_CONTEXT = 1024


@pytest.fixture(scope="session")
def text_model(tmp_path_factory):
    """A tiny random Llama over printable ASCII, saved as a folder: a stand-in for a hub model on real text
    (it writes gibberish, so it scores 0, but every preset's prompts, sampling and verifier run)."""
    import string

    folder = tmp_path_factory.mktemp("text-model")
    tokenizer = build_tokenizer(string.printable)
    cfg = BuiltinModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=5)
    model = build_model(cfg, tokenizer)
    # a context that holds the presets' prompts (task.max_prompt_tokens drops longer ones), as hub models' do;
    # rotary positions are computed on the fly, so the weights do not depend on it
    model.config.max_position_embeddings = tokenizer.model_max_length = TEXT_MODEL_CONTEXT
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
