"""What trains the policy, chosen by ``algorithm.trainer``: RL (``train.loop``) or distillation
(``train.distill``). Every entry has one loop signature, ``(Trainer, start_step) -> None``, and a
start-up check of the settings only it reads (``(RunConfig) -> None``, raising ConfigError)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from algorithms.registry import Registry
from train import distill, loop
from train.config import RunConfig


@dataclass(frozen=True)
class TrainerKind:
    train: Callable[[loop.Trainer, int], None]  # the loop: steps start_step .. trainer.total_steps
    check: Callable[[RunConfig], None]  # raises ConfigError saying how to fix a setting this loop cannot use
    samples: bool = True  # draws rollouts from the policy, so needs a rollout engine (a colocated vLLM holds memory)


def _no_checks(cfg: RunConfig) -> None:
    """The RL loop's settings are checked by ``train.config.check`` itself."""


TRAINERS: Registry = Registry("trainer")
TRAINERS.register("rl")(TrainerKind(train=loop.train, check=_no_checks))
TRAINERS.register("distill")(TrainerKind(train=distill.train, check=distill.check_config, samples=False))

__all__ = ["TRAINERS", "TrainerKind"]
