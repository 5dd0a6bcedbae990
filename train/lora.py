"""LoRA training with PEFT: adapters on the policy, plain full-size weights everywhere else.

``model.lora.rank > 0`` wraps the policy with PEFT's ``get_peft_model`` (names as in verl's
``lora_rank``/``lora_alpha``/``target_modules`` and OpenRLHF's ``--lora_rank``): only the adapters
train, so the optimizer keeps state for them alone (rank 64 on every linear layer of Qwen2.5-7B is
162M parameters, about 2% of the model). What leaves the trainer stays a plain model, as TRL does
for vLLM: checkpoints hold the merged weights (they load with ``AutoModelForCausalLM`` and vLLM, and
the eval sweep reads them unchanged) plus the adapter alone in ``adapter/``, and the vLLM engine is
pushed the merged weights. Merging here adds each layer's ``get_delta_weight`` to a copy of its base
weight, never in place: PEFT's ``merge_adapter`` / ``unmerge_adapter`` round trip (TRL's way) would
leave rounding residue in the trained model.

The reference model of a KL term is the same network with its adapters switched off (TRL's
``disable_adapter`` for PEFT models, verl's reference-in-actor): no second copy of the base.
PPO's critic is not adapted; it trains in full beside the adapted policy.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from train.config import ConfigError, LoRAConfig

_PEFT_PREFIX = "base_model.model."


def with_lora(model: PreTrainedModel, cfg: LoRAConfig) -> PeftModel:
    """``model`` with trainable LoRA adapters on ``cfg.target_modules``; its own weights frozen."""
    targets = cfg.target_modules[0] if list(cfg.target_modules) == ["all-linear"] else list(cfg.target_modules)
    peft_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                          bias="none", task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as err:  # PEFT: target modules not found in the base model
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(
            f"model.lora.target_modules={list(cfg.target_modules)}: {err}. Linear layers of this model: "
            f"{', '.join(linear)} (or all-linear)"
        ) from err


def is_lora(model: torch.nn.Module) -> bool:
    return isinstance(model, PeftModel)


def plain_weights(model: torch.nn.Module, named: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """``named`` (parameters or a state dict of ``model``) under the names of the plain model.

    A PEFT model's base weights come back with the adapter's delta added (a new tensor) and PEFT's
    name parts removed; adapter tensors are left out. Other models' tensors pass through unchanged.
    Under ZeRO-3, call it inside a context that gathers the parameters.
    """
    if not is_lora(model):
        yield from named
        return
    adapter = model.active_adapter
    for name, tensor in named:
        if model.prefix in name:  # "lora_": the adapter itself, folded into its base weight below
            continue
        plain = name.removeprefix(_PEFT_PREFIX).replace(".base_layer", "")
        if name.endswith(".base_layer.weight"):
            layer = model.get_submodule(name.removesuffix(".base_layer.weight"))
            if isinstance(layer, LoraLayer) and adapter in layer.lora_A and not layer.merged:
                tensor = tensor + layer.get_delta_weight(adapter).to(tensor.dtype)
        yield plain, tensor


def plain_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``plain_weights`` of a state dict, as a state dict the plain model's ``save_pretrained`` takes."""
    return dict(plain_weights(model, state_dict.items()))


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper (whose ``save_pretrained`` writes a full model)."""
    return model.get_base_model() if is_lora(model) else model


class AdaptersOff(torch.nn.Module):
    """The trained module with its LoRA adapters switched off: the base model, as the KL reference.

    ``trained`` is the prepared (DDP/DeepSpeed) module, ``policy`` the PEFT model inside it. Not a
    submodule of its own (``trained`` is held in a list), so it owns no parameters and is never saved.
    """

    def __init__(self, trained: torch.nn.Module, policy: PeftModel) -> None:
        super().__init__()
        self._held = [trained, policy]

    def forward(self, *args, **kwargs):
        trained, policy = self._held
        with policy.disable_adapter():
            return trained(*args, **kwargs)

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        return self._held[0].parameters(recurse)  # where callers look for the device

    def train(self, mode: bool = True) -> "AdaptersOff":
        self._held[0].train(mode)  # eval() for the reference pass reaches the trained module
        self.training = mode
        return self
