"""Numbers: parity with verl's ``verl.trainer.ppo.core_algos`` (verl 0.9.1 from PyPI), on random batches.

Every advantage estimator, the PPO-clip loss in every aggregation mode (with clip-higher and
dual-clip), and every KL estimator, on batches with uneven masks, interleaved groups, a group of
identical rewards and groups of one. verl's own functions are called, with the signatures of the
installed version; nothing of verl is copied here.

Installing verl. ``pip install verl==0.9.1`` cannot go into the ``test`` extra: it pins
``transformers<5.11`` (we use 5.23), ``tensordict<=0.10.0`` and ``ray[default]``, so pip's resolver
either refuses or downgrades transformers. verl is installed without its dependency tree, plus the
few packages that ``import verl.trainer.ppo.core_algos`` really loads (``verl/__init__`` imports
``verl.protocol``, which imports ray and tensordict). ``.ci/run`` runs this line after ``.[test]``::

    pip install --no-deps verl==0.9.1 ray==2.60.0 tensordict==0.10.0 pyvers==0.1.0 orjson \
        cloudpickle codetiming jsonschema jsonschema-specifications referencing rpds-py attrs

(ray's own import needs click, filelock, msgpack, protobuf, pyyaml and requests, which the
project's dependencies already bring.) Without verl this module is skipped, except under CI
(``CI`` set), where a missing verl is an error rather than a silent skip.

Where we differ from verl on purpose, the test says so and checks our documented formula instead:
- gae: verl leaves whitened advantages and ``values`` on masked positions; ours are 0 there.
- remax: verl ignores gamma; we discount the return-to-go by it (the same at gamma = 1, the default).
- aggregation: with a fully masked row, verl's seq-mean modes divide by the non-empty rows, ours by
  all rows (as TRL); ``test_empty_row_counts_in_seq_mean`` pins the ratio.
- policy loss: verl always applies dual-clip (``clip_ratio_c`` default 3); ours only when ``clip_c`` is
  set. Without it we compare against verl with a ``clip_ratio_c`` too large to ever bind.
- outcome estimators sum ``token_rewards`` under the mask; verl sums the whole row (the same when
  padding rewards are 0, as our inputs guarantee).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms import AdvantageInputs, compute_advantages, kl_penalty, policy_loss, value_loss
from algorithms.advantages import discounted_returns
from tests.peers import verl_module

core_algos = verl_module("verl.trainer.ppo.core_algos")
from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402

torch.set_num_threads(1)

GROUP_SIZES = (4, 3, 1, 5, 1, 2)  # two groups of one; group 3 gets identical rewards
IDENTICAL_GROUP = 3
WIDTH = 9


def random_batch(seed: int, *, penalties: bool = False, holes: bool = False) -> tuple[AdvantageInputs, np.ndarray]:
    """Outcome rewards at each response's last valid token, groups shuffled together, uneven lengths.

    ``penalties`` adds small per-token rewards on valid tokens (a KL penalty folded in); ``holes``
    masks a few tokens inside responses (tool output in a multi-turn response).
    """
    gen = torch.Generator().manual_seed(seed)
    group_ids = torch.cat([torch.full((n,), g) for g, n in enumerate(GROUP_SIZES)])
    batch = len(group_ids)
    group_ids = group_ids[torch.randperm(batch, generator=gen)]
    lengths = torch.randint(1, WIDTH + 1, (batch,), generator=gen)
    lengths[0], lengths[1] = 1, WIDTH  # the extremes always occur
    mask = (torch.arange(WIDTH)[None] < lengths[:, None]).float()
    if holes:
        hole = (torch.rand(batch, WIDTH, generator=gen) < 0.2) & (torch.arange(WIDTH)[None] < lengths[:, None] - 1)
        mask = mask * (~hole).float()
    outcome = torch.randint(0, 3, (batch,), generator=gen).float() / 2
    outcome[group_ids == IDENTICAL_GROUP] = 1.0
    token_rewards = torch.zeros(batch, WIDTH)
    token_rewards[torch.arange(batch), lengths - 1] = outcome
    if penalties:
        token_rewards -= 0.05 * torch.rand(batch, WIDTH, generator=gen)
    token_rewards = token_rewards * mask
    values = torch.randn(batch, WIDTH, generator=gen)
    baseline = torch.randint(0, 3, (batch,), generator=gen).float() / 2
    inputs = AdvantageInputs(
        token_rewards=token_rewards, response_mask=mask, group_ids=group_ids, values=values, baseline_rewards=baseline
    )
    return inputs, group_ids.numpy()  # verl groups by a numpy array of ids (its "uid" column)


def assert_on_mask(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> None:
    """Equal on valid tokens, and ours is zero elsewhere (our contract)."""
    torch.testing.assert_close(ours * mask, theirs * mask, rtol=1e-5, atol=1e-6)
    assert (ours[mask == 0] == 0).all()


SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_grpo(seed, norm_by_std):
    inputs, index = random_batch(seed)
    ours = compute_advantages("grpo", inputs, norm_by_std=norm_by_std)
    adv, ret = core_algos.compute_grpo_outcome_advantage(
        inputs.token_rewards.clone(), inputs.response_mask, index, epsilon=1e-6, norm_adv_by_std_in_grpo=norm_by_std
    )
    torch.testing.assert_close(ours.advantages, adv)
    torch.testing.assert_close(ours.returns, ret)
    identical = torch.from_numpy(index == IDENTICAL_GROUP)
    assert (ours.advantages[identical] == 0).all()


# estimators that take no options, with verl's function of the same estimator
PLAIN_OUTCOME = {"rloo": "compute_rloo_outcome_advantage", "opo": "compute_opo_outcome_advantage",
                 "gpg": "compute_gpg_outcome_advantage"}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("estimator", list(PLAIN_OUTCOME))
def test_plain_outcome_estimators(estimator, seed):
    inputs, index = random_batch(seed)
    ours = compute_advantages(estimator, inputs)
    verl_fn = getattr(core_algos, PLAIN_OUTCOME[estimator])
    adv, ret = verl_fn(inputs.token_rewards.clone(), inputs.response_mask, index)
    torch.testing.assert_close(ours.advantages, adv)
    torch.testing.assert_close(ours.returns, ret)


def without_singletons(inputs: AdvantageInputs, index: np.ndarray) -> tuple[AdvantageInputs, np.ndarray]:
    """The batch minus its groups of one (grpo_passk refuses them, as verl does)."""
    ids, counts = np.unique(index, return_counts=True)
    keep = torch.from_numpy(np.isin(index, ids[counts > 1]))
    return AdvantageInputs(token_rewards=inputs.token_rewards[keep], response_mask=inputs.response_mask[keep],
                           group_ids=inputs.group_ids[keep]), index[keep.numpy()]


@pytest.mark.parametrize("seed", SEEDS + [3, 4, 5])
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_grpo_passk(seed, norm_by_std):
    inputs, index = without_singletons(*random_batch(seed))
    ours = compute_advantages("grpo_passk", inputs, norm_by_std=norm_by_std)
    adv, ret = core_algos.compute_grpo_passk_outcome_advantage(
        inputs.token_rewards.clone(), inputs.response_mask, index, epsilon=1e-6,
        config=AlgoConfig(norm_adv_by_std_in_grpo=norm_by_std),
    )
    torch.testing.assert_close(ours.advantages, adv)
    torch.testing.assert_close(ours.returns, ret)
    assert int((ours.advantages.abs().sum(-1) > 0).sum()) <= len(np.unique(index))  # one sample per group at most


def test_grpo_passk_by_hand():
    """Group 0 scores (1, 0, 0, 0): only its solver moves, by 1 / std = 1 / 0.5; group 1 (1, 1, 0) is a tie at
    the top and gets nothing; group 2 (1, 0.5) pays its best by 0.5 / std(1, 0.5) = 0.5 / 0.3536."""
    scores = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 1, 0.5])
    inputs = AdvantageInputs(token_rewards=scores[:, None], response_mask=torch.ones(9, 1),
                             group_ids=torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2]))
    got = compute_advantages("grpo_passk", inputs).advantages[:, 0]
    expected = torch.tensor([1 / (0.5 + 1e-6), 0, 0, 0, 0, 0, 0, 0.5 / (0.125**0.5 + 1e-6), 0])
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        compute_advantages("grpo_passk", AdvantageInputs(scores[:2, None], torch.ones(2, 1), torch.tensor([0, 1])))


def test_opo_by_hand():
    """Lengths 1 and 3, rewards 1 and 0: baseline (1*1 + 3*0) / 4 = 0.25."""
    mask = torch.tensor([[1.0, 0, 0], [1, 1, 1]])
    inputs = AdvantageInputs(token_rewards=torch.tensor([[1.0, 0, 0], [0, 0, 0]]), response_mask=mask,
                             group_ids=torch.tensor([0, 0]))
    torch.testing.assert_close(compute_advantages("opo", inputs).advantages, torch.tensor([[0.75, 0, 0], [-0.25] * 3]))


def test_gpg_by_hand():
    """One sample in four scores: alpha = 4 / 1, group mean 0.25, so A = 4 * (1 - 0.25) and 4 * (0 - 0.25)."""
    inputs = AdvantageInputs(token_rewards=torch.tensor([[1.0], [0], [0], [0]]), response_mask=torch.ones(4, 1),
                             group_ids=torch.tensor([0, 0, 0, 0]))
    torch.testing.assert_close(compute_advantages("gpg", inputs).advantages[:, 0], torch.tensor([3.0, -1, -1, -1]))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0)])
def test_gae(seed, holes, gamma, lam):
    inputs, _ = random_batch(seed, penalties=True, holes=holes)
    ours = compute_advantages("gae", inputs, gamma=gamma, lam=lam)
    adv, ret = core_algos.compute_gae_advantage_return(
        inputs.token_rewards, inputs.values, inputs.response_mask, gamma=gamma, lam=lam
    )
    # Deliberate difference: verl leaves whitened advantages and raw values on masked positions.
    assert_on_mask(ours.advantages, adv, inputs.response_mask)
    assert_on_mask(ours.returns, ret, inputs.response_mask)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_pp(seed, holes, gamma):
    inputs, _ = random_batch(seed, penalties=True, holes=holes)
    ours = compute_advantages("reinforce_pp", inputs, gamma=gamma)
    adv, ret = core_algos.compute_reinforce_plus_plus_outcome_advantage(
        inputs.token_rewards, inputs.response_mask, config=AlgoConfig(gamma=gamma)
    )
    torch.testing.assert_close(ours.advantages, adv)
    torch.testing.assert_close(ours.returns, ret)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("penalties", [False, True])
def test_reinforce_pp_baseline(seed, penalties):
    inputs, index = random_batch(seed, penalties=penalties)
    ours = compute_advantages("reinforce_pp_baseline", inputs)
    adv, ret = core_algos.compute_reinforce_plus_plus_baseline_outcome_advantage(
        inputs.token_rewards.clone(), inputs.response_mask, index
    )
    torch.testing.assert_close(ours.advantages, adv)
    torch.testing.assert_close(ours.returns, ret)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("holes", [False, True])
def test_remax(seed, holes):
    inputs, _ = random_batch(seed, penalties=True, holes=holes)
    ours = compute_advantages("remax", inputs)
    adv, ret = core_algos.compute_remax_outcome_advantage(
        inputs.token_rewards, inputs.baseline_rewards, inputs.response_mask
    )
    # verl's return-to-go is a plain reversed cumsum and is not masked: equal on valid tokens.
    assert_on_mask(ours.advantages, adv, inputs.response_mask)
    assert_on_mask(ours.returns, ret, inputs.response_mask)


def test_remax_discounts_where_verl_does_not():
    """Deliberate difference: verl's ReMax ignores gamma; ours is G_t(gamma) - b, checked by formula."""
    inputs, _ = random_batch(5, penalties=True)
    ours = compute_advantages("remax", inputs, gamma=0.9)
    expected = discounted_returns(inputs.token_rewards, inputs.response_mask, 0.9)
    torch.testing.assert_close(ours.returns, expected)
    torch.testing.assert_close(ours.advantages, (expected - inputs.baseline_rewards[:, None]) * inputs.response_mask)


# ---------------------------------------------------------------------------------------------
# Policy loss

AGGS = ["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
CLIPS = {  # name: (clip_low, clip_high, clip_c)
    "ppo": (0.2, 0.2, None),
    "clip-higher": (0.2, 0.28, None),
    "dual-clip": (0.2, 0.2, 3.0),
    "clip-higher+dual-clip": (0.2, 0.28, 2.5),
}
NO_DUAL_CLIP = 1e10  # verl always dual-clips; exp(20) < 1e10 caps the ratio, so this never binds


def loss_batch(seed: int, batch: int = 10, width: int = 8):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (batch,), generator=gen)
    lengths[0] = 1
    mask = (torch.arange(width)[None] < lengths[:, None]).float()
    old = -torch.rand(batch, width, generator=gen) * 3
    logprobs = old + 0.7 * torch.randn(batch, width, generator=gen)  # ratios from ~0.1 to ~8: every clip binds
    advantages = torch.randn(batch, width, generator=gen)
    return logprobs, old, advantages, mask


def verl_policy_loss(logprobs, old, advantages, mask, agg, clip_low, clip_high, clip_c, **global_batch_info):
    config = ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=clip_low,
        clip_ratio_low=clip_low,
        clip_ratio_high=clip_high,
        clip_ratio_c=NO_DUAL_CLIP if clip_c is None else clip_c,
        loss_agg_mode=agg,
        global_batch_info=global_batch_info,
    )
    return core_algos.compute_policy_loss_vanilla(
        old_log_prob=old, log_prob=logprobs, advantages=advantages, response_mask=mask, loss_agg_mode=agg, config=config
    )


def loss_and_grad(fn, logprobs):
    logprobs = logprobs.clone().requires_grad_(True)
    loss, metrics = fn(logprobs)
    loss.backward()
    return loss.detach(), logprobs.grad, metrics


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("agg", AGGS)
def test_policy_loss(agg, clip, seed):
    logprobs, old, advantages, mask = loss_batch(seed)
    clip_low, clip_high, clip_c = CLIPS[clip]
    ours = loss_and_grad(
        lambda lp: policy_loss(
            lp, old, advantages, mask, clip_low=clip_low, clip_high=clip_high, clip_c=clip_c, agg=agg
        ),
        logprobs,
    )
    theirs = loss_and_grad(
        lambda lp: verl_policy_loss(lp, old, advantages, mask, agg, clip_low, clip_high, clip_c), logprobs
    )
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])
    metrics, verl_metrics = ours[2], theirs[2]
    assert metrics["clipfrac"].item() == pytest.approx(verl_metrics["actor/pg_clipfrac"], abs=1e-6)
    assert metrics["approx_kl"].item() == pytest.approx(verl_metrics["actor/ppo_kl"], abs=1e-6)
    assert metrics["clipfrac_lower"].item() == pytest.approx(verl_metrics["actor/pg_clipfrac_lower"], abs=1e-6)
    if clip_c is not None:
        assert metrics["clipfrac_lower"] > 0  # the batch really exercises dual-clip
    assert metrics["clipfrac"] > 0


@pytest.mark.parametrize("agg", AGGS)
def test_policy_loss_whole_batch_normalisers(agg):
    """A micro-batch normalised by the whole mini-batch's counts, ours vs verl's ``global_batch_info``."""
    logprobs, old, advantages, mask = loss_batch(3, batch=12)
    counts = dict(num_tokens=float(mask.sum()), num_seqs=12.0, max_len=16)
    verl_counts = dict(dp_size=1, batch_num_tokens=mask.sum(), global_batch_size=12, loss_scale_factor=16)
    part = slice(4, 8)
    args = (old[part], advantages[part], mask[part])
    ours = loss_and_grad(
        lambda lp: policy_loss(lp, *args, clip_high=0.28, clip_c=3.0, agg=agg, **counts), logprobs[part]
    )
    theirs = loss_and_grad(lambda lp: verl_policy_loss(lp, *args, agg, 0.2, 0.28, 3.0, **verl_counts), logprobs[part])
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_empty_row_counts_in_seq_mean(agg):
    """Deliberate difference: a fully masked row counts in our default sequence count (as TRL), not verl's."""
    logprobs, old, advantages, mask = loss_batch(4)
    mask[3] = 0
    batch = mask.shape[0]
    ours, _ = policy_loss(logprobs, old, advantages, mask, agg=agg)
    theirs, _ = verl_policy_loss(logprobs, old, advantages, mask, agg, 0.2, 0.2, None)
    torch.testing.assert_close(ours, theirs * (batch - 1) / batch)
    explicit, _ = policy_loss(logprobs, old, advantages, mask, agg=agg, num_seqs=batch - 1)
    torch.testing.assert_close(explicit, theirs)  # passing verl's count gives verl's number


# ---------------------------------------------------------------------------------------------
# KL estimators


@pytest.mark.parametrize("ours,theirs", [("k1", "kl"), ("k2", "mse"), ("k3", "low_var_kl"), ("k3", "k3")])
def test_kl_penalty(ours, theirs):
    gen = torch.Generator().manual_seed(7)
    logprobs = -torch.rand(6, 8, generator=gen) * 5
    ref = logprobs + 2 * torch.randn(6, 8, generator=gen)
    ref[0, :3] = torch.tensor([-40.0, 0.0, -1e-3])  # |log ratio| > 20 and a k3 above 10: both clamps bind
    logprobs[0, :3] = torch.tensor([0.0, -30.0, -25.0])
    mine = loss_and_grad(lambda lp: (kl_penalty(lp, ref, ours).sum(), None), logprobs)
    verl = loss_and_grad(lambda lp: (core_algos.kl_penalty(lp, ref, theirs).sum(), None), logprobs)
    torch.testing.assert_close(kl_penalty(logprobs, ref, ours), core_algos.kl_penalty(logprobs, ref, theirs))
    torch.testing.assert_close(mine[1], verl[1])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("agg", AGGS)
def test_value_loss(agg, seed):
    """The critic's clipped value loss and its clip fraction, ours vs verl's ``compute_value_loss``."""
    _, old_values, returns, mask = loss_batch(seed)
    values = old_values + torch.randn(old_values.shape, generator=torch.Generator().manual_seed(seed)) * 0.8
    counts = dict(num_tokens=float(mask.sum()), num_seqs=float(mask.shape[0]), max_len=mask.shape[1])
    verl_counts = dict(dp_size=1, batch_num_tokens=mask.sum(), global_batch_size=mask.shape[0],
                       loss_scale_factor=mask.shape[1])
    ours = loss_and_grad(lambda v: value_loss(v, old_values, returns, mask, clip=0.5, agg=agg, **counts), values)
    theirs = loss_and_grad(
        lambda v: (lambda out: (out[0], {"vf_clipfrac": out[1]}))(
            core_algos.compute_value_loss(v, returns, old_values, mask, 0.5, loss_agg_mode=agg, **verl_counts)
        ),
        values,
    )
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])
    assert ours[2]["vf_clipfrac"].item() == pytest.approx(float(theirs[2]["vf_clipfrac"]), abs=1e-6)
    assert ours[2]["vf_clipfrac"] > 0  # the batch really exercises the clip
