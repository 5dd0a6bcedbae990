"""Numbers: advantage estimators, the PPO-clip loss, aggregation and KL, computed by hand.

Parity with peers' implementations lives in ``test_parity_verl.py`` and ``test_parity_trl.py``.
"""

import math

import pytest
import torch

from algorithms import (
    AGGREGATIONS,
    ESTIMATORS,
    AdvantageInputs,
    aggregate_loss,
    compute_advantages,
    kl_penalty,
    masked_whiten,
    policy_loss,
)
from algorithms.advantages import discounted_returns


def outcome_inputs(rewards, group_ids, lengths, width=4):
    mask = torch.tensor([[1.0] * n + [0.0] * (width - n) for n in lengths])
    token_rewards = torch.zeros_like(mask)
    for i, (r, n) in enumerate(zip(rewards, lengths)):
        token_rewards[i, n - 1] = r
    return AdvantageInputs(token_rewards=token_rewards, response_mask=mask, group_ids=torch.tensor(group_ids))


def test_grpo_advantages_by_hand():
    # group 0: rewards 1,0,0,1 -> mean 0.5, unbiased std sqrt(1/3); group 1: equal rewards; group 2: alone
    inputs = outcome_inputs([1, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 2], [4, 2, 3, 1, 2, 4, 3])
    out = compute_advantages("grpo", inputs)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    expected_seq = torch.tensor([a, -a, -a, a, 0.0, 0.0, 1 / (1 + 1e-6)])
    torch.testing.assert_close(out.advantages, expected_seq[:, None] * inputs.response_mask)
    torch.testing.assert_close(out.returns, out.advantages)
    assert out.advantages[1, 2:].abs().sum() == 0  # padding stays zero


def test_dr_grpo_only_centres():
    inputs = outcome_inputs([1, 0, 0, 1], [7, 7, 7, 7], [1, 2, 3, 4])
    out = compute_advantages("grpo", inputs, norm_by_std=False)
    torch.testing.assert_close(out.advantages[:, 0], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_rloo_is_leave_one_out_mean():
    rewards = [1.0, 0.0, 0.5]
    out = compute_advantages("rloo", outcome_inputs(rewards, [3, 3, 3], [1, 1, 1]))
    expected = [r - (sum(rewards) - r) / 2 for r in rewards]
    torch.testing.assert_close(out.advantages[:, 0], torch.tensor(expected))


def test_grpo_group_order_does_not_matter():
    torch.manual_seed(0)
    rewards = torch.randint(0, 2, (12,)).float().tolist()
    groups = [0, 1, 2] * 4
    inputs = outcome_inputs(rewards, groups, [4] * 12)
    perm = torch.randperm(12)
    shuffled = outcome_inputs([rewards[i] for i in perm], [groups[i] for i in perm], [4] * 12)
    torch.testing.assert_close(
        compute_advantages("grpo", inputs).advantages[perm], compute_advantages("grpo", shuffled).advantages
    )


def test_unknown_estimator_lists_known_ones():
    with pytest.raises(KeyError, match="known: .*grpo"):
        compute_advantages("nope", outcome_inputs([1], [0], [1]))


def test_ppo_clip_loss_by_hand():
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.5, 4.0, 1.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, -1.0, 2.0]])
    mask = torch.ones_like(ratio)
    old = torch.zeros_like(ratio)
    # per token: clipped 1.2 -> -1.2; -0.5; clipped 0.8 -> 0.8; 1.5; 4.0; -2.0
    loss, metrics = policy_loss(ratio.log(), old, adv, mask)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 0.8 + 1.5 + 4.0 - 2.0) / 6, rel=1e-6)
    assert metrics["clipfrac"].item() == pytest.approx(2 / 6)
    # dual-clip caps the negative-advantage token with ratio 4 at clip_c = 3
    loss_dual, metrics_dual = policy_loss(ratio.log(), old, adv, mask, clip_c=3.0)
    assert loss_dual.item() == pytest.approx((-1.2 - 0.5 + 0.8 + 1.5 + 3.0 - 2.0) / 6, rel=1e-6)
    assert metrics_dual["clipfrac_lower"].item() == pytest.approx(1 / 6)
    # clip-higher lets the positive-advantage ratio 1.5 through up to 1.28
    loss_high, _ = policy_loss(ratio.log(), old, adv, mask, clip_high=0.28)
    assert loss_high.item() == pytest.approx((-1.28 - 0.5 + 0.8 + 1.5 + 4.0 - 2.0) / 6, rel=1e-6)


def test_masked_tokens_change_nothing():
    torch.manual_seed(1)
    logp, old, adv = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).float()
    noisy = torch.where(mask.bool(), logp, torch.full_like(logp, 1e3))
    for agg in AGGREGATIONS.names():
        a, _ = policy_loss(logp, old, adv, mask, agg=agg)
        b, _ = policy_loss(noisy, old, adv, mask, agg=agg)
        torch.testing.assert_close(a, b)


def test_aggregations_by_hand():
    loss_mat = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert aggregate_loss(loss_mat, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate_loss(loss_mat, mask, "token-sum").item() == pytest.approx(10)
    assert aggregate_loss(loss_mat, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate_loss(loss_mat, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    assert aggregate_loss(loss_mat, mask, "seq-mean-token-sum-norm", max_len=5).item() == pytest.approx(10 / (2 * 5))


@pytest.mark.parametrize("agg", AGGREGATIONS.names())
def test_split_batch_sums_to_whole_batch(agg):
    """Micro-batches normalised by whole-batch counts add up to the whole-batch loss."""
    torch.manual_seed(2)
    loss_mat = torch.randn(8, 6)
    mask = (torch.rand(8, 6) > 0.3).float()
    mask[:, 0] = 1
    whole = aggregate_loss(loss_mat, mask, agg, max_len=6)
    counts = dict(num_tokens=float(mask.sum()), num_seqs=8.0, max_len=6)
    parts = sum(aggregate_loss(loss_mat[i : i + 2], mask[i : i + 2], agg, **counts) for i in range(0, 8, 2))
    torch.testing.assert_close(parts, whole)


def test_kl_estimators_by_hand():
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.4)]])
    r = ref - logp
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), logp - ref)
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), 0.5 * (logp - ref) ** 2)
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), r.exp() - 1 - r)
    assert (kl_penalty(logp, ref, "k3") >= 0).all()
    with pytest.raises(KeyError, match="known: k1, k2, k3"):
        kl_penalty(logp, ref, "k4")


def test_k3_is_unbiased_kl_estimate():
    """E_{x~p}[k3] = KL(p || q) for categorical p, q."""
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.5, 0.3])
    exact = (p * (p / q).log()).sum()
    estimate = (p * kl_penalty(p.log()[None], q.log()[None], "k3")[0]).sum()
    torch.testing.assert_close(estimate, exact)


# ---------------------------------------------------------------------------------------------
# Token-level estimators: gae, reinforce_pp, reinforce_pp_baseline, remax


def test_discounted_returns_by_hand():
    rewards = torch.tensor([[0.0, -0.1, 1.0], [2.0, 9.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])  # row 1: a masked token inside the response
    returns = discounted_returns(rewards, mask, 0.5)
    # row 1: the masked token adds no reward and no discount step: G_0 = 2 + 0.5 * 3
    expected = torch.tensor([[-0.1 * 0.5 + 0.25, -0.1 + 0.5, 1.0], [2.0 + 1.5, 0.0, 3.0]])
    torch.testing.assert_close(returns, expected)


def test_undiscounted_returns_are_a_reversed_cumsum():
    torch.manual_seed(3)
    rewards, mask = torch.randn(5, 7), (torch.rand(5, 7) > 0.3).float()
    vectorised = (rewards * mask).flip(-1).cumsum(-1).flip(-1) * mask
    torch.testing.assert_close(discounted_returns(rewards, mask, 1.0), vectorised)


def token_inputs(**extra):
    rewards = torch.tensor([[0.0, 0.0, 1.0], [-0.1, 0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [0.1, 0.3, 7.0]])
    group_ids = torch.tensor([0, 0])
    return AdvantageInputs(token_rewards=rewards, response_mask=mask, group_ids=group_ids, values=values, **extra)


@pytest.mark.parametrize(
    "lam,expected_returns",
    [
        (1.0, [[1.0, 1.0, 1.0], [0.4, 0.5, 0.0]]),  # lambda = 1: A + V telescopes to the return-to-go
        (0.0, [[0.2, 0.4, 1.0], [0.2, 0.5, 0.0]]),  # lambda = 0: A + V = r_t + V_{t+1} (one-step TD target)
    ],
)
def test_gae_by_hand(lam, expected_returns):
    inputs = token_inputs()
    out = compute_advantages("gae", inputs, lam=lam)
    torch.testing.assert_close(out.returns, torch.tensor(expected_returns))
    raw = (out.returns - inputs.values) * inputs.response_mask  # A before whitening
    torch.testing.assert_close(out.advantages, masked_whiten(raw, inputs.response_mask) * inputs.response_mask)
    valid = out.advantages[inputs.response_mask.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert valid.std().item() == pytest.approx(1.0, abs=1e-4)
    assert out.advantages[1, 2] == 0 and out.returns[1, 2] == 0  # padding, whatever the critic said there


def test_gae_discount():
    out = compute_advantages("gae", token_inputs(), gamma=0.5, lam=0.5)
    # row 0: delta = [0 + 0.1 - 0.5, 0 + 0.2 - 0.2, 1 - 0.4]; A = [-0.4 + 0.25 * 0.15, 0 + 0.25 * 0.6, 0.6]
    torch.testing.assert_close(out.returns[0], torch.tensor([-0.4 + 0.0375 + 0.5, 0.15 + 0.2, 0.6 + 0.4]))


def test_reinforce_pp_whitens_the_return_to_go():
    inputs = token_inputs()
    out = compute_advantages("reinforce_pp", inputs, gamma=0.5)
    torch.testing.assert_close(out.returns, torch.tensor([[0.25, 0.5, 1.0], [0.15, 0.5, 0.0]]))
    valid = out.returns[inputs.response_mask.bool()]
    expected = (valid - valid.mean()) / valid.var().add(1e-8).sqrt()  # unbiased variance over valid tokens
    torch.testing.assert_close(out.advantages[inputs.response_mask.bool()], expected)
    assert out.advantages[1, 2] == 0


def test_reinforce_pp_baseline_by_hand():
    # groups: {0, 1} with rewards 1, 0 -> centred 0.5, -0.5; sample 2 alone keeps its 0.5
    inputs = outcome_inputs([1.0, 0.0, 0.5], [4, 4, 9], [2, 1, 3])
    out = compute_advantages("reinforce_pp_baseline", inputs)
    centred = torch.tensor([0.5, 0.5, -0.5, 0.5, 0.5, 0.5])  # the valid tokens, row by row
    expected = (centred - centred.mean()) / centred.var().add(1e-8).sqrt()
    torch.testing.assert_close(out.advantages[inputs.response_mask.bool()], expected)
    torch.testing.assert_close(out.returns, out.advantages)


def test_remax_subtracts_the_greedy_reward():
    inputs = token_inputs(baseline_rewards=torch.tensor([0.5, 1.0]))
    out = compute_advantages("remax", inputs)
    torch.testing.assert_close(out.returns, torch.tensor([[1.0, 1.0, 1.0], [0.4, 0.5, 0.0]]))
    torch.testing.assert_close(out.advantages, torch.tensor([[0.5, 0.5, 0.5], [-0.6, -0.5, 0.0]]))


@pytest.mark.parametrize(
    "estimator,match", [("gae", "needs critic values"), ("remax", "needs AdvantageInputs.baseline_rewards")]
)
def test_missing_inputs_say_what_is_missing(estimator, match):
    with pytest.raises(ValueError, match=match):
        compute_advantages(estimator, outcome_inputs([1.0], [0], [1]))


def random_inputs(seed: int, batch: int = 10, width: int = 6) -> AdvantageInputs:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (batch,), generator=gen)
    mask = (torch.arange(width)[None] < lengths[:, None]).float()
    rewards = torch.zeros(batch, width)
    rewards[torch.arange(batch), lengths - 1] = torch.randint(0, 2, (batch,), generator=gen).float()
    return AdvantageInputs(
        token_rewards=(rewards - 0.01 * torch.rand(batch, width, generator=gen)) * mask,
        response_mask=mask,
        group_ids=(torch.arange(batch) % 4)[torch.randperm(batch, generator=gen)],  # groups of 2+ (grpo_passk needs them)
        values=torch.randn(batch, width, generator=gen),
        baseline_rewards=torch.rand(batch, generator=gen),
    )


@pytest.mark.parametrize("estimator", ESTIMATORS.names())
def test_estimators_ignore_masked_positions(estimator):
    """Garbage in padded rewards and values changes nothing; outputs are zero on padding."""
    inputs = random_inputs(4)
    pad = inputs.response_mask == 0
    noisy = AdvantageInputs(
        token_rewards=inputs.token_rewards.masked_fill(pad, 5.0),
        response_mask=inputs.response_mask,
        group_ids=inputs.group_ids,
        values=inputs.values.masked_fill(pad, -3.0),
        baseline_rewards=inputs.baseline_rewards,
    )
    clean, dirty = compute_advantages(estimator, inputs, gamma=0.9), compute_advantages(estimator, noisy, gamma=0.9)
    torch.testing.assert_close(clean.advantages, dirty.advantages)
    torch.testing.assert_close(clean.returns, dirty.returns)
    assert (clean.advantages[pad] == 0).all() and (clean.returns[pad] == 0).all()


@pytest.mark.parametrize("estimator", ESTIMATORS.names())
def test_estimators_commute_with_reordering_the_batch(estimator):
    inputs = random_inputs(5)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    shuffled = AdvantageInputs(
        token_rewards=inputs.token_rewards[perm],
        response_mask=inputs.response_mask[perm],
        group_ids=inputs.group_ids[perm],
        values=inputs.values[perm],
        baseline_rewards=inputs.baseline_rewards[perm],
    )
    torch.testing.assert_close(
        compute_advantages(estimator, inputs).advantages[perm], compute_advantages(estimator, shuffled).advantages
    )
