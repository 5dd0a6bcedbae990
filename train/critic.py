"""PPO's critic: a value head on a copy of the base model (or a configured model), trained with the actor.

Actor and critic live in one module, as in TRL's ``PolicyAndValueWrapper``, so accelerate and
DeepSpeed prepare, synchronise and checkpoint them together; each keeps its own learning rate
through its own optimizer parameter group.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import AutoModelForTokenClassification, PreTrainedModel

from train.config import ModelConfig
from train.models import DTYPES


@dataclass
class PolicyOutput:
    logits: torch.Tensor  # (B, L, V)
    critic_values: torch.Tensor  # (B, L) V(s_t) at every position (not ``values``: HF outputs have a values())


class PolicyWithCritic(torch.nn.Module):
    def __init__(self, policy: PreTrainedModel, critic: PreTrainedModel) -> None:
        super().__init__()
        self.policy = policy
        self.critic = critic
        self.config = policy.config  # what TRL's generation helpers and DeepSpeed read

    def forward(self, input_ids, attention_mask, position_ids=None, use_cache=False) -> PolicyOutput:
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache)
        logits = self.policy(**kwargs).logits
        values = self.critic(**kwargs).logits.squeeze(-1)
        return PolicyOutput(logits=logits, critic_values=values)

    # TRL's unwrap_model_for_generation asks the unwrapped module about gradient checkpointing.
    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.policy.is_gradient_checkpointing or self.critic.is_gradient_checkpointing

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.policy.gradient_checkpointing_enable(**kwargs)
        self.critic.gradient_checkpointing_enable(**kwargs)

    def gradient_checkpointing_disable(self) -> None:
        self.policy.gradient_checkpointing_disable()
        self.critic.gradient_checkpointing_disable()


def load_critic(name_or_path: str, model_cfg: ModelConfig, dtype: str | None = None) -> PreTrainedModel:
    """A token-level value model: the backbone of ``name_or_path`` with a fresh 1-output head, in
    ``dtype`` (default ``model.dtype``). Its head's dropout (0.1 by default) is on until
    ``train.models.without_dropout`` turns it off."""
    return AutoModelForTokenClassification.from_pretrained(
        name_or_path, num_labels=1, dtype=DTYPES[dtype or model_cfg.dtype], trust_remote_code=model_cfg.trust_remote_code
    )


def policy_of(model: torch.nn.Module) -> torch.nn.Module:
    """The generating model inside an (unwrapped) module."""
    return model.policy if isinstance(model, PolicyWithCritic) else model


@contextlib.contextmanager
def policy_context(context) -> Iterator[torch.nn.Module]:
    """Wrap a context yielding the trained module so it yields the policy (the part that samples)."""
    with context as model:
        yield policy_of(model)


def split_state_dict(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """{"policy": ..., "critic": ...} for a PolicyWithCritic state dict; {"policy": all} otherwise."""
    if not isinstance(model, PolicyWithCritic):
        return {"policy": state_dict}
    parts: dict[str, dict[str, torch.Tensor]] = {"policy": {}, "critic": {}}
    for key, value in state_dict.items():
        part, _, rest = key.partition(".")
        parts[part][rest] = value
    return parts

