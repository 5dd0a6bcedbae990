"""Loading the base model and tokenizer: the built-in tiny model, a hub id or a local folder."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from train.config import ModelConfig, TaskConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_base(model_cfg: ModelConfig, task_cfg: TaskConfig, progress: bool = True) -> str:
    """The folder or hub id of the base model; builds (or finds cached) the built-in one."""
    if model_cfg.name_or_path == "builtin":
        from train.base_model import ensure_builtin_base

        return str(ensure_builtin_base(model_cfg, task_cfg, progress=progress))
    return model_cfg.name_or_path


def load_model(name_or_path: str | Path, model_cfg: ModelConfig) -> PreTrainedModel:
    if model_cfg.dtype not in DTYPES:
        raise ValueError(f"model.dtype={model_cfg.dtype!r} is unknown; choose one of: {', '.join(DTYPES)}")
    return AutoModelForCausalLM.from_pretrained(
        str(name_or_path), dtype=DTYPES[model_cfg.dtype], trust_remote_code=model_cfg.trust_remote_code
    )


def load_tokenizer(name_or_path: str | Path, model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=model_cfg.trust_remote_code)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of {name_or_path} has no eos token; responses could never end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # the usual choice for decoder-only models
    return tokenizer
