"""Numbers: DAPO's filter and length shaping, batch concatenation, the value loss, critic warm-up."""

import pytest
import torch
from transformers import AutoModelForTokenClassification

from algorithms import TrainBatch, informative_groups, overlong_penalty, value_loss
from algorithms.batch import ScoredRollouts, concat_rollouts
from train.actor import LossNorm, micro_batch_loss
from train.config import AlgorithmConfig, CriticConfig
from train.critic import PolicyWithCritic, split_state_dict


def test_informative_groups_drops_uniform_and_single_groups():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5])
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    assert informative_groups(rewards, groups).tolist() == [False, False, True, True, False, False, False]


def test_overlong_penalty_is_dapo_eq_13():
    lengths = torch.tensor([0, 40, 48, 52, 56, 64])
    # max 64, buffer 16: free up to 48, then linear to -factor at 64
    expected = [0.0, 0.0, 0.0, -0.25 * 0.5, -0.5 * 0.5, -1.0 * 0.5]
    torch.testing.assert_close(overlong_penalty(lengths, 64, 16, factor=0.5), torch.tensor(expected))
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(lengths, 64, 0)


def _scored(prompt_len, response_len, groups, rewards):
    b = len(groups)
    return ScoredRollouts(
        prompt_ids=torch.arange(b * prompt_len).view(b, prompt_len), prompt_mask=torch.ones(b, prompt_len),
        response_ids=torch.arange(b * response_len).view(b, response_len), response_mask=torch.ones(b, response_len),
        sample_logprobs=torch.zeros(b, response_len), group_ids=torch.tensor(groups), texts=[str(i) for i in range(b)],
        truncated=torch.zeros(b, dtype=torch.bool), rewards=torch.tensor(rewards), correct=torch.tensor(rewards) > 0,
    )


def test_concat_rollouts_pads_and_keeps_groups_apart():
    a = _scored(2, 3, [0, 0, 1, 1], [1.0, 0.0, 1.0, 1.0])
    b = _scored(4, 1, [0, 0], [0.0, 1.0])
    merged = concat_rollouts([a, b], pad_id=-1)
    assert merged.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert merged.prompt_ids.shape == (6, 4) and merged.response_ids.shape == (6, 3)
    assert merged.prompt_mask[:4, :2].sum() == 0 and (merged.prompt_ids[:4, :2] == -1).all()  # left-padded
    assert merged.response_mask[4:, 1:].sum() == 0 and (merged.response_ids[4:, 1:] == -1).all()  # right-padded
    assert torch.equal(merged.prompt_ids[:4, 2:], a.prompt_ids)
    assert merged.texts == a.texts + b.texts
    assert merged.rewards.tolist() == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]


def test_value_loss_by_hand():
    values = torch.tensor([[1.0, 2.0, 0.0]])
    old = torch.tensor([[0.5, 0.5, 0.0]])
    returns = torch.tensor([[1.0, 1.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # clip 0.5 around V_old = 0.5 keeps V in [0, 1]: t0 V=1 -> both terms 0; t1 V=2 -> unclipped
    # (2-1)^2 = 1, clipped (1-1)^2 = 0, the max is 1; t2 is padding. 0.5 x token-mean of (0, 1).
    loss, m = value_loss(values, old, returns, mask, clip=0.5)
    assert loss.item() == pytest.approx(0.5 * (0.0 + 1.0) / 2)
    assert m["vf_clipfrac"].item() == 0.0
    unclipped, _ = value_loss(values, old, returns, mask, clip=None)
    assert unclipped.item() == pytest.approx(0.5 * 1.0 / 2)


def test_critic_warmup_leaves_the_policy_untouched(tiny_model, tiny_tokenizer, tmp_path):
    """train_actor=False (critic warm-up): the critic learns, the policy gets zero gradient."""
    tiny_model.save_pretrained(tmp_path)
    critic = AutoModelForTokenClassification.from_pretrained(tmp_path, num_labels=1)
    model = PolicyWithCritic(tiny_model, critic)
    batch = _train_batch(tiny_tokenizer)
    algo = AlgorithmConfig(advantage="gae", critic=CriticConfig(enabled=True))
    norm = LossNorm(num_tokens=float(batch.response_mask.sum()), num_seqs=4.0, max_len=5)
    for train_actor in (False, True):
        model.zero_grad()
        loss, metrics = micro_batch_loss(model, batch, algo, 1.0, norm, train_actor=train_actor)
        loss.backward()
        policy_grad = sum(float(p.grad.abs().sum()) for p in model.policy.parameters() if p.grad is not None)
        critic_grad = sum(float(p.grad.abs().sum()) for p in model.critic.parameters() if p.grad is not None)
        assert critic_grad > 0 and "critic/vf_loss" in metrics
        assert (policy_grad > 0) == train_actor
    parts = split_state_dict(model.state_dict(), model)
    assert set(parts) == {"policy", "critic"}
    assert parts["policy"].keys() == tiny_model.state_dict().keys()


def _train_batch(tokenizer):
    torch.manual_seed(0)
    scored = _scored(3, 5, [0, 0, 1, 1], [1.0, 0.0, 0.0, 1.0])
    scored.prompt_ids = torch.randint(4, len(tokenizer), (4, 3))
    scored.response_ids = torch.randint(4, len(tokenizer), (4, 5))
    scored.response_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]).float()
    return TrainBatch.of(
        scored, old_logprobs=torch.full((4, 5), -2.0), ref_logprobs=None, advantages=torch.randn(4, 5),
        returns=torch.randn(4, 5), old_values=torch.randn(4, 5),
    )
