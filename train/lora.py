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

import contextlib
from typing import ContextManager, Iterable, Iterator

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from train.config import ConfigError, LoRAConfig

_PEFT_PREFIX = "base_model.model."


def with_lora(model: PreTrainedModel, cfg: LoRAConfig, zero3: bool = False) -> PeftModel:
    """``model`` with trainable LoRA adapters on ``cfg.target_modules``; its own weights frozen.

    ``zero3``: the model is trained under DeepSpeed ZeRO-3. PEFT then keeps the adapters in the base
    model's dtype instead of upcasting them to float32 (``autocast_adapter_dtype=False``, as TRL does):
    ZeRO-3 gathers a module's parameters into one buffer of the first one's dtype, so bf16 base weights
    beside fp32 adapters fail at the first optimizer step (TRL #6089, DeepSpeed #8072). DeepSpeed's
    bf16 optimizer keeps fp32 master copies of the adapters anyway.
    """
    targets = cfg.target_modules[0] if list(cfg.target_modules) == ["all-linear"] else list(cfg.target_modules)
    peft_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                          bias="none", task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, peft_cfg, autocast_adapter_dtype=not zero3)
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

    A PEFT model's base weights come back with the adapter's delta added (a new tensor, on the device
    and in the dtype of the given tensor: under DeepSpeed a state dict sits in host memory while the
    adapters are on the GPU) and PEFT's name parts removed; adapter tensors are left out. Other
    models' tensors pass through unchanged. Under ZeRO-3, call it inside a context that gathers the
    parameters, or use :func:`streamed_weights`.
    """
    if not is_lora(model):
        yield from named
        return
    for name, tensor in named:
        if model.prefix in name:  # "lora_": the adapter itself, folded into its base weight below
            continue
        layer = _adapted_layer(model, name)
        yield _plain_name(name), (tensor if layer is None else _merged(model, layer, tensor))


def streamed_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights of ``model`` as :func:`plain_weights` gives them, one layer at a time.

    Under DeepSpeed ZeRO-3 each parameter is gathered (with the adapters of its layer, for LoRA) only
    while it is read, so no process ever holds more than one layer gathered; TRL streams parameters
    into vLLM the same way. Each gather is a collective: every process must read the whole iterator,
    in order. A tensor read must be used or copied before the next one is asked for.
    """
    lora = is_lora(model)
    for name, param in model.named_parameters():
        if lora and model.prefix in name:
            continue
        layer = _adapted_layer(model, name) if lora else None
        with gathered([param] if layer is None else list(layer.parameters())):
            if layer is None:
                yield (_plain_name(name) if lora else name), param.detach()
            else:
                yield _plain_name(name), _merged(model, layer, param.detach())


def gathered(params: list[torch.nn.Parameter]) -> ContextManager:
    """``params`` whole on this process inside the context: ZeRO-3 partitioned ones are gathered (a
    collective, read-only), others are already whole."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned)


def _plain_name(name: str) -> str:
    return name.removeprefix(_PEFT_PREFIX).replace(".base_layer", "")


def _adapted_layer(model: PeftModel, name: str) -> LoraLayer | None:
    """The LoRA layer whose base weight ``name`` is, when its active adapter is unmerged."""
    if not name.endswith(".base_layer.weight"):
        return None
    layer = model.get_submodule(name.removesuffix(".base_layer.weight"))
    if isinstance(layer, LoraLayer) and model.active_adapter in layer.lora_A and not layer.merged:
        return layer
    return None


def _merged(model: PeftModel, layer: LoraLayer, base: torch.Tensor) -> torch.Tensor:
    """``base`` plus the layer's adapter delta, computed where the adapters are and added where ``base`` is."""
    return base + layer.get_delta_weight(model.active_adapter).to(device=base.device, dtype=base.dtype)


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
