"""Loading the base model and tokenizer: the built-in tiny model, a hub id or a local folder."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from train.config import ModelConfig, RunConfig, TaskConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_base(model_cfg: ModelConfig, task_cfg: TaskConfig, progress: bool = True) -> str:
    """The folder or hub id of the base model; builds (or finds cached) the built-in one, converts (or finds
    converted) a GGUF file."""
    if model_cfg.name_or_path == "builtin":
        from train.base_model import ensure_builtin_base

        return str(ensure_builtin_base(model_cfg, task_cfg, progress=progress))
    if model_cfg.gguf_file:
        from train.gguf import ensure_converted

        return str(ensure_converted(model_cfg, progress=progress))
    if model_cfg.package:
        from train.gguf import package_folder

        return str(package_folder(model_cfg))
    return model_cfg.name_or_path


def load_model(name_or_path: str | Path, model_cfg: ModelConfig, dtype: Optional[str] = None) -> PreTrainedModel:
    """The causal LM in ``dtype`` (default ``model.dtype``)."""
    dtype = dtype or model_cfg.dtype
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype={dtype!r} is unknown; choose one of: {', '.join(DTYPES)}")
    return AutoModelForCausalLM.from_pretrained(
        str(name_or_path), dtype=DTYPES[dtype], trust_remote_code=model_cfg.trust_remote_code
    )


def trained_dtype(cfg: RunConfig) -> str:
    """The dtype the trained weights are held in.

    Under DeepSpeed, ``model.dtype``: with bf16/fp16 on (``mixed_precision``, which follows ``model.dtype``)
    its optimizer keeps float32 master copies of 16-bit weights. Plain DDP (or one process) has no master
    copies, and an RL update far below a bf16 weight's resolution (1/128 of its size) would round away:
    there the weights are float32 and the 16-bit ``model.dtype`` is the autocast dtype of the compute.
    Checkpoints are written in ``model.dtype`` either way.
    """
    if cfg.deepspeed.preset != "none":
        return cfg.model.dtype
    return "float32"


def mixed_precision(cfg: RunConfig) -> str:
    """accelerate's ``mixed_precision``: ``trainer.mixed_precision``, or, left "no", the one ``model.dtype``
    asks for (bf16 weights train as float32 masters with bf16 compute, see :func:`trained_dtype`)."""
    if cfg.trainer.mixed_precision != "no":
        return cfg.trainer.mixed_precision
    return {"bfloat16": "bf16", "float16": "fp16"}.get(cfg.model.dtype, "no")


def without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its dropout off, also in train mode (TRL's ``disable_dropout_in_model``, plus the
    attention dropout transformers' attention layers apply as a float, e.g. Llama's and Qwen2's
    ``attention_dropout``). LoRA's adapter dropout (``model.lora.dropout``) is configured on purpose and kept."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout) and "lora_dropout" not in name:
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    return model


def load_for_inference(
    name_or_path: str | Path, model_cfg: ModelConfig, device: Optional[torch.device] = None
) -> PreTrainedModel:
    """A whole model to sample from or score with (the pass@k sweep, perplexities), in eval mode on
    ``device``: by default the one accelerate gives this process (``cuda:LOCAL_RANK`` on GPUs, else the
    CPU). It is loaded outside any DeepSpeed ZeRO-3 context a training run in this process left set,
    which would otherwise partition it over processes that are not taking part (rank 0 sweeps alone).
    """
    from accelerate import PartialState

    with outside_zero3():
        model = load_model(name_or_path, model_cfg)
    return model.to(device if device is not None else PartialState().device).eval()


@contextlib.contextmanager
def outside_zero3() -> Iterator[None]:
    """transformers' ``from_pretrained`` builds models under ``deepspeed.zero.Init`` while an HF DeepSpeed
    config of stage 3 is set (accelerate sets one for a ZeRO-3 run and keeps it alive): unset it for the
    duration, then put it back."""
    from transformers.integrations import deepspeed as hf_deepspeed

    held = hf_deepspeed._hf_deepspeed_config_weak_ref  # a weak reference, or None
    config = held() if held is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if config is not None:
            hf_deepspeed.set_hf_deepspeed_config(config)


def load_tokenizer(name_or_path: str | Path, model_cfg: ModelConfig) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=model_cfg.trust_remote_code)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of {name_or_path} has no eos token; responses could never end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # the usual choice for decoder-only models
    return tokenizer
