"""Numbers: our GRPO advantages and loss against TRL's ``GRPOTrainer`` (trl 1.16), loss and gradients.

TRL is driven through its own code path, nothing of it is copied: a ``GRPOTrainer`` on a tiny random
Llama with the built-in task's character tokenizer samples 4 completions for each of 3 prompts and
scores them with a reward function (``_generate_and_score_completions``), which also gives TRL's
group-normalised advantages. We then shorten some completion masks (so lengths are uneven
whatever the sampler did), set ``old_per_token_logps`` to perturbed log-probs (so ratios leave the
clip range) and call TRL's ``_compute_loss``. Our side recomputes the log-probs with
``train.actor.response_logprobs``, the advantages with ``compute_advantages("grpo", ...)`` from the
rewards the reward function returned, and the loss with ``policy_loss``; loss values and the
gradients on every parameter must agree.

TRL loss type -> our aggregation (``algorithms.masked``):
- ``grpo``: ``seq-mean-token-mean``;
- ``bnpo``: ``token-mean`` over the micro-batch;
- ``dapo``: ``token-mean`` over ``num_items_in_batch``, the tokens of the whole generation batch: we
  feed TRL half the batch and pass the whole batch's count as ``num_tokens``;
- ``dr_grpo``: ``seq-mean-token-sum-norm`` with ``max_len = max_completion_length``, and
  ``scale_rewards="none"``, which is our ``norm_by_std=False``.

Deliberate differences, matched by configuration here:
- TRL adds 1e-4 to the group std before dividing, hard-coded; our default ``eps`` is verl's 1e-6, so
  the test passes ``eps=1e-4``.
- TRL has no dual-clip (``clip_c``) and a one-sided ``delta`` cap we do not have; neither is used.
- With ``beta > 0`` TRL multiplies the k3 KL term by the importance ratio by default
  (``use_bias_correction_kl=True``); ours is not importance-weighted, so the ``beta > 0`` case sets
  ``use_bias_correction_kl=False``. TRL adds the KL to the per-token loss before aggregating; we
  aggregate it separately with the same mode (``train.actor``), which is the same by linearity.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from algorithms import AdvantageInputs, aggregate_loss, compute_advantages, kl_penalty, policy_loss
from train.actor import response_logprobs
from train.base_model import build_model, build_tokenizer
from train.config import BuiltinModelConfig
from train.tasks.arithmetic import ALPHABET

MODEL = BuiltinModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)
PROMPTS = ["12+3=", "45+6=", "7+80="]  # equal lengths: no left padding, so positions agree with TRL's
FIXED_REWARD = [1.0, None, None]  # prompt 0: every completion scores 1, a group of identical rewards
GENERATIONS = 4
MAX_COMPLETION = 6
LENGTH_CAP = [6, 2, 4, 1, 6, 3, 5, 1, 2, 6, 4, 3]  # per completion: masks are uneven whatever is sampled

# transformers deprecates the name of a field TRL's config still sets; nothing to do on our side
pytestmark = pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.* is deprecated:FutureWarning")


@dataclass(frozen=True)
class Case:
    loss_type: str  # TRL's
    agg: str  # ours
    scale_rewards: str = "group"  # TRL's; "none" is our norm_by_std=False
    epsilon_high: float = 0.2  # > 0.2 is clip-higher
    beta: float = 0.0  # KL coefficient (k3 in both)


CASES = {
    "grpo": Case("grpo", "seq-mean-token-mean"),
    "bnpo": Case("bnpo", "token-mean", epsilon_high=0.28),
    "dapo": Case("dapo", "token-mean", epsilon_high=0.28),
    "dr_grpo": Case("dr_grpo", "seq-mean-token-sum-norm", scale_rewards="none"),
    "grpo+kl": Case("grpo", "seq-mean-token-mean", beta=0.04),
}


def digit_share(completions: list[str], fixed: list[float | None], **_) -> list[float]:
    """The share of digits in a completion, or the prompt's fixed reward (TRL's calling convention)."""
    return [f if f is not None else sum(ch.isdigit() for ch in c) / max(len(c), 1) for c, f in zip(completions, fixed)]


def make_trainer(tmp_path, case: Case, rewards_seen: list[list[float]]) -> GRPOTrainer:
    tokenizer = build_tokenizer(ALPHABET)
    model = build_model(MODEL, tokenizer)
    if case.beta:  # TRL loads its reference model from the policy's path
        model.save_pretrained(tmp_path / "model")
        model = str(tmp_path / "model")

    def reward(**kwargs) -> list[float]:
        rewards_seen.append(digit_share(**kwargs))
        return rewards_seen[-1]

    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        per_device_train_batch_size=len(PROMPTS) * GENERATIONS,
        num_generations=GENERATIONS,
        max_completion_length=MAX_COMPLETION,
        loss_type=case.loss_type,
        scale_rewards=case.scale_rewards,
        epsilon=0.2,
        epsilon_high=case.epsilon_high,
        beta=case.beta,
        use_bias_correction_kl=False,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS, "fixed": FIXED_REWARD}),
        processing_class=tokenizer,
    )


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def perturbed(logprobs: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    noise = torch.randn(logprobs.shape, generator=torch.Generator().manual_seed(seed))
    return (logprobs + 0.4 * noise) * mask


@pytest.mark.parametrize("name", list(CASES))
def test_grpo_loss_matches_trl(tmp_path, name):
    case = CASES[name]
    rewards_seen: list[list[float]] = []
    trainer = make_trainer(tmp_path, case, rewards_seen)
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1  # the Trainer's loop sets it; one micro-batch per step
    torch.manual_seed(0)
    rows = [row for row in trainer.train_dataset for _ in range(GENERATIONS)]
    batch = trainer._generate_and_score_completions(rows)
    assert len(rewards_seen) == 1

    # Our advantages from the same rewards, groups by prompt.
    cap = torch.arange(MAX_COMPLETION)[None] < torch.tensor(LENGTH_CAP)[:, None]
    mask = batch["completion_mask"] * cap  # (B, T) shortened, right-padded
    lengths = mask.sum(-1)
    assert len(set(lengths.tolist())) > 2
    rewards = torch.tensor(rewards_seen[0])
    token_rewards = torch.zeros(mask.shape).scatter_(1, (lengths - 1)[:, None], rewards[:, None])
    group_ids = torch.arange(len(PROMPTS)).repeat_interleave(GENERATIONS)
    advantages = compute_advantages(
        "grpo",
        AdvantageInputs(token_rewards=token_rewards, response_mask=mask.float(), group_ids=group_ids),
        norm_by_std=case.scale_rewards != "none",
        eps=1e-4,  # TRL's hard-coded std epsilon
    ).advantages
    torch.testing.assert_close(advantages[:, 0], batch["advantages"])
    assert (advantages[:GENERATIONS] == 0).all() and advantages[GENERATIONS:].abs().sum() > 0

    # Old and reference log-probs off the current policy, so that ratios leave [1 - eps, 1 + eps_high].
    prompt_ids, prompt_mask, completion_ids = batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"]
    with torch.no_grad():
        current, _ = response_logprobs(model, prompt_ids, prompt_mask, completion_ids, mask, 1.0)
    old, ref = perturbed(current, mask, 1), perturbed(current, mask, 2)

    # dapo normalises by the tokens of the whole generation batch: give TRL half of it.
    fed = slice(0, len(rows) // 2) if case.loss_type == "dapo" else slice(None)
    inputs = {
        "prompt_ids": prompt_ids[fed],
        "prompt_mask": prompt_mask[fed],
        "completion_ids": completion_ids[fed],
        "completion_mask": mask[fed],
        "advantages": batch["advantages"][fed],
        "old_per_token_logps": old[fed],
        "ref_per_token_logps": ref[fed],
        "num_items_in_batch": mask.sum(),
    }
    model.zero_grad()
    trl_loss = trainer._compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = grads(model)

    model.zero_grad()
    response_mask = mask[fed].float()
    logprobs, _ = response_logprobs(model, prompt_ids[fed], prompt_mask[fed], completion_ids[fed], response_mask, 1.0)
    norm = dict(num_tokens=float(mask.sum()) if case.loss_type == "dapo" else None, max_len=MAX_COMPLETION)
    loss, metrics = policy_loss(
        logprobs,
        old[fed],
        advantages[fed],
        response_mask,
        clip_low=0.2,
        clip_high=case.epsilon_high,
        agg=case.agg,
        **norm,
    )
    if case.beta:
        loss = loss + case.beta * aggregate_loss(kl_penalty(logprobs, ref[fed], "k3"), response_mask, case.agg, **norm)
    loss.backward()
    our_grads = grads(model)

    assert metrics["clipfrac"] > 0  # the clipped branch is exercised
    torch.testing.assert_close(loss.detach(), trl_loss.detach(), rtol=1e-5, atol=1e-6)
    assert our_grads.keys() == trl_grads.keys() and len(our_grads) > 0
    for param in our_grads:
        torch.testing.assert_close(our_grads[param], trl_grads[param], rtol=1e-4, atol=1e-6, msg=param)
