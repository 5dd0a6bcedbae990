"""Numbers: the policy-loss registry against verl 0.9.1's ``core_algos`` losses, on random batches.

Every registered loss, in every aggregation mode, with verl's defaults and with other options, with
and without rollout-correction weights, on batches with uneven masks (a one-token row, a full row,
holes): loss and gradient equal verl's, and so does every metric both report (ours is verl's name
minus ``actor/``; verl's ``pg_clipfrac`` / ``pg_clipfrac_lower`` / ``ppo_kl`` are our ``clipfrac`` /
``clipfrac_lower`` / ``approx_kl``). The verl metrics we leave out are its constant zeros. Also:
the defaults are verl's; ``ppo`` equals ``algorithms.policy_loss``; micro-batches with whole-batch
normalisers equal verl's ``global_batch_info`` and sum to the whole batch; masked tokens change
nothing; gradients are finite at extreme ratios; unknown names and options fail listing the known ones.

verl is installed as ``tests/test_parity_verl.py`` describes. Without it this module is skipped,
except under CI (``CI`` set), where a missing verl is an error.

Where we differ from verl on purpose, the test compares with verl configured so that the difference
does not bind, or with verl's own pieces put together as documented:
- ppo: verl (``vanilla``) always dual-clips (``clip_ratio_c`` 3); ours only with ``clip_c``. Without
  it verl runs with ``clip_ratio_c`` = 1e10, which never binds (the ratio is at most exp(20)). The
  same 1e10 stands for ``clip_c=None`` (no truncation) in dppo.
- sapo: verl aggregates seq-mean-token-mean whatever ``loss_agg_mode`` says; ours aggregates by
  ``agg``. In seq-mean-token-mean we compare with verl directly; in the other modes with verl's
  per-token losses (its sapo on one token at a time) aggregated by verl's ``agg_loss``.
- gmpo (verl's ``geo_mean``): verl takes a plain mean of its per-sample losses over the micro-batch,
  ignoring ``loss_agg_mode`` and ``global_batch_info``; ours puts each sample's loss on each of its
  tokens and aggregates like every loss (so it stays split invariant). seq-mean-token-mean with our
  default normalisers is compared with verl directly; other modes and whole-batch normalisers with
  verl's per-sample losses (its geo_mean on one row at a time) spread over the row's tokens and
  aggregated by verl's ``agg_loss``.
- clip_cov draws its tokens from ``generator``, verl from the global RNG: ``torch.manual_seed(s)``
  before verl's call and ``torch.Generator().manual_seed(s)`` for ours draw the same tokens.
- clip_cov and kl_cov pick tokens from the batch they see, so micro-batches do not sum to the whole
  batch (verl also picks per micro-batch); they are left out of the split test, and compared with
  verl micro-batch against micro-batch.
- a fully masked row counts in our default sequence count, not verl's (``test_parity_verl``); the
  batches here have none.
"""

from __future__ import annotations

import pytest
import torch

from algorithms import (
    AGGREGATIONS,
    POLICY_LOSSES,
    PolicyLossInputs,
    compute_policy_loss,
    policy_loss,
    policy_loss_options,
)
from tests.peers import verl_module

core_algos = verl_module("verl.trainer.ppo.core_algos")
from verl.workers.config import ActorConfig, PolicyLossConfig  # noqa: E402

torch.set_num_threads(1)

AGGS = AGGREGATIONS.names()
SEQ_MEAN_TOKEN_MEAN = "seq-mean-token-mean"
BATCH, WIDTH = 10, 8
NEVER = 1e10  # a clip_ratio_c that never binds: the log-ratio is clamped at 20 and exp(20) < 1e10
VERL_NAME = {"ppo": "vanilla", "gmpo": "geo_mean"}
METRIC_NAME = {  # ours -> verl's
    "clipfrac": "actor/pg_clipfrac", "clipfrac_lower": "actor/pg_clipfrac_lower", "approx_kl": "actor/ppo_kl",
}
OPTIONS = {  # per loss: verl's defaults ({}), then settings that move every option
    "ppo": [{}, {"clip_high": 0.28}, {"clip_c": 3.0}, {"clip_low": 0.1, "clip_high": 0.3, "clip_c": 2.5}],
    "gspo": [{}, {"clip_low": 3e-4, "clip_high": 4e-4}],
    "cispo": [{}, {"clip_low": 1.0, "clip_high": 0.28}],
    "sapo": [{}, {"tau_pos": 0.5, "tau_neg": 2.0}],
    "gmpo": [{}, {"clip_low": 0.4, "clip_high": 0.3}],
    "clip_cov": [{}, {"clip_high": 0.28, "clip_cov_ratio": 0.1, "clip_cov_lb": 0.05, "clip_cov_ub": 3.0}],
    "kl_cov": [{}, {"kl_cov_ratio": 0.1, "ppo_kl_coef": 1.0}],
    "gpg": [{}],
    "dppo_tv": [{}, {"clip_low": 0.15, "clip_high": 0.1, "clip_c": None}],
    "dppo_kl": [{}, {"clip_low": 0.05, "clip_high": 0.03, "clip_c": 20.0}],
}
CASES = [(name, i) for name, settings in OPTIONS.items() for i in range(len(settings))]


def random_batch(seed: int, batch: int = BATCH, width: int = WIDTH):
    """(logprobs, old_logprobs, advantages, mask, rollout_is_weights), all (batch, width).

    Uneven lengths (row 0 has one token, row 1 all of them) and a few holes inside responses;
    log-probs below 0 (dppo reads them as probabilities) with ratios from ~0.1 to ~10, so every clip binds.
    """
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (batch,), generator=gen)
    lengths[0], lengths[1] = 1, width
    positions = torch.arange(width)[None]
    hole = (torch.rand(batch, width, generator=gen) < 0.15) & (positions > 0)
    mask = ((positions < lengths[:, None]) & ~hole).float()
    old = -(torch.rand(batch, width, generator=gen) * 3 + 0.01)
    logprobs = (old + 0.8 * torch.randn(batch, width, generator=gen)).clamp(max=-1e-3)
    advantages = torch.randn(batch, width, generator=gen)
    weights = 0.2 + 1.6 * torch.rand(batch, width, generator=gen)
    return logprobs, old, advantages, mask, weights


def verl_config(name: str, options: dict, agg: str, batch_info: dict | None = None) -> ActorConfig:
    """verl's ActorConfig for our ``name`` and ``options``: options we do not set keep verl's defaults."""
    actor_fields = {"clip_low": "clip_ratio_low", "clip_high": "clip_ratio_high", "clip_c": "clip_ratio_c",
                    "tau_pos": "tau_pos", "tau_neg": "tau_neg"}
    actor = {actor_fields[k]: NEVER if v is None else v for k, v in options.items() if k in actor_fields}
    if name == "ppo":
        actor.setdefault("clip_ratio_c", NEVER)  # our default is no dual-clip
    loss = {k: v for k, v in options.items() if k not in actor_fields}
    return ActorConfig(
        strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, loss_agg_mode=agg,
        policy_loss=PolicyLossConfig(loss_mode=VERL_NAME.get(name, name), **loss),
        global_batch_info=batch_info or {}, **actor,
    )


def verl_loss(name, logprobs, old, advantages, mask, agg, config, weights):
    return core_algos.get_policy_loss_fn(VERL_NAME.get(name, name))(
        old_log_prob=old, log_prob=logprobs, advantages=advantages, response_mask=mask,
        loss_agg_mode=agg, config=config, rollout_is_weights=weights,
    )


def reference(name, logprobs, old, advantages, mask, agg, options, weights=None, batch_info=None, seed=0):
    """verl's (loss, metrics) for our loss and aggregation; see the module docstring for sapo and gmpo."""
    config = verl_config(name, options, agg, batch_info)
    torch.manual_seed(seed)  # clip_cov draws from the global RNG
    loss, metrics = verl_loss(name, logprobs, old, advantages, mask, agg, config, weights)
    piecewise = (name == "sapo" and agg != SEQ_MEAN_TOKEN_MEAN) or (
        name == "gmpo" and (agg != SEQ_MEAN_TOKEN_MEAN or batch_info)
    )
    if not piecewise:
        return loss, metrics
    one = (lambda x, i, t: x[i : i + 1, t : t + 1]) if name == "sapo" else (lambda x, i, t: x[i : i + 1])
    alone = verl_config(name, options, agg)  # each piece normalised by itself alone
    pieces = [
        [verl_loss(name, *(one(x, i, t) for x in (logprobs, old, advantages, mask)), agg, alone,
                   None if weights is None else one(weights, i, t))[0] if mask[i, t] else torch.tensor(0.0)
         for t in range(mask.shape[1])]
        for i in range(mask.shape[0])
    ]  # sapo: the loss of valid token (i, t); gmpo: the loss of row i on each valid token
    matrix = torch.stack([torch.stack(row) for row in pieces])
    return core_algos.agg_loss(matrix, mask, agg, **(batch_info or {})), metrics


def loss_and_grad(fn, logprobs):
    logprobs = logprobs.clone().requires_grad_(True)
    loss, metrics = fn(logprobs)
    loss.backward()
    return loss.detach(), logprobs.grad, metrics


def assert_same(ours, theirs):
    """Loss, gradient and metrics equal; verl's metrics that we leave out are its constant zeros."""
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-5, atol=1e-6)
    ours_metrics, verl_metrics = ours[2], theirs[2]
    for key, value in ours_metrics.items():
        assert value.dim() == 0 and not value.requires_grad
        assert value.item() == pytest.approx(float(verl_metrics[METRIC_NAME[key]]), abs=1e-6), key
    reported = {METRIC_NAME[key] for key in ours_metrics}
    assert all(float(value) == 0.0 for key, value in verl_metrics.items() if key not in reported)


def test_every_loss_is_tested():
    assert sorted(OPTIONS) == POLICY_LOSSES.names()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("name,case", CASES)
def test_equals_verl(name, case, agg, weighted, seed):
    logprobs, old, advantages, mask, weights = random_batch(seed)
    weights = weights if weighted else None
    options = OPTIONS[name][case]
    ours = loss_and_grad(
        lambda lp: compute_policy_loss(name, lp, old, advantages, mask, agg=agg, rollout_is_weights=weights,
                                       generator=torch.Generator().manual_seed(seed), **options),
        logprobs,
    )
    theirs = loss_and_grad(
        lambda lp: reference(name, lp, old, advantages, mask, agg, options, weights, seed=seed), logprobs
    )
    assert_same(ours, theirs)


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("name", POLICY_LOSSES.names())
def test_micro_batch_with_whole_batch_normalisers_equals_verl(name, agg):
    """A micro-batch normalised by the whole mini-batch's counts, ours vs verl's ``global_batch_info``."""
    logprobs, old, advantages, mask, weights = random_batch(3, batch=12)
    counts = dict(num_tokens=float(mask.sum()), num_seqs=12.0, max_len=16)
    batch_info = dict(dp_size=1, batch_num_tokens=mask.sum(), global_batch_size=12, loss_scale_factor=16)
    options = OPTIONS[name][-1]
    part = slice(4, 9)
    args = (old[part], advantages[part], mask[part])
    ours = loss_and_grad(
        lambda lp: compute_policy_loss(name, lp, *args, agg=agg, rollout_is_weights=weights[part],
                                       generator=torch.Generator().manual_seed(0), **counts, **options),
        logprobs[part],
    )
    theirs = loss_and_grad(
        lambda lp: reference(name, lp, *args, agg, options, weights[part], batch_info), logprobs[part]
    )
    assert_same(ours, theirs)


def test_defaults_are_verls():
    actor = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1)
    verl_defaults = {
        "clip_low": actor.clip_ratio_low, "clip_high": actor.clip_ratio_high, "clip_c": actor.clip_ratio_c,
        "tau_pos": actor.tau_pos, "tau_neg": actor.tau_neg, **vars(PolicyLossConfig()),
    }
    for name in POLICY_LOSSES.names():
        for option, default in policy_loss_options(name).items():
            if (name, option) == ("ppo", "clip_c"):
                assert default is None  # deliberate: no dual-clip unless asked for
            else:
                assert default == verl_defaults[option], (name, option)


CLIPS = [dict(), dict(clip_high=0.28), dict(clip_c=3.0), dict(clip_low=0.1, clip_high=0.3, clip_c=2.5)]


@pytest.mark.parametrize("clip", range(len(CLIPS)))
@pytest.mark.parametrize("agg", AGGS)
def test_ppo_is_policy_loss(agg, clip):
    """The registry's ``ppo`` is today's ``algorithms.policy_loss``, normalisers and all."""
    logprobs, old, advantages, mask, _ = random_batch(4)
    counts = dict(num_tokens=float(mask.sum()) + 3, num_seqs=13.0, max_len=11)
    ours = loss_and_grad(lambda lp: compute_policy_loss("ppo", lp, old, advantages, mask, agg=agg, **counts,
                                                        **CLIPS[clip]), logprobs)
    today = loss_and_grad(lambda lp: policy_loss(lp, old, advantages, mask, agg=agg, **counts, **CLIPS[clip]),
                          logprobs)
    torch.testing.assert_close(ours[0], today[0], rtol=0, atol=0)
    torch.testing.assert_close(ours[1], today[1], rtol=0, atol=0)
    assert ours[2] == today[2]


SPLIT_INVARIANT = [name for name in POLICY_LOSSES.names() if name not in ("clip_cov", "kl_cov")]


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("name", SPLIT_INVARIANT)
def test_micro_batches_sum_to_whole_batch(name, agg):
    """Two micro-batches normalised by whole-batch counts give the whole batch's loss and gradient."""
    logprobs, old, advantages, mask, weights = random_batch(5)
    options = OPTIONS[name][-1]
    whole = loss_and_grad(lambda lp: compute_policy_loss(name, lp, old, advantages, mask, agg=agg,
                                                         rollout_is_weights=weights, **options), logprobs)
    counts = dict(num_tokens=float(mask.sum()), num_seqs=float(BATCH), max_len=WIDTH)

    def split(lp):
        parts = [
            compute_policy_loss(name, lp[rows], old[rows], advantages[rows], mask[rows], agg=agg,
                                rollout_is_weights=weights[rows], **counts, **options)[0]
            for rows in (slice(0, 3), slice(3, BATCH))
        ]
        return parts[0] + parts[1], {}

    parts = loss_and_grad(split, logprobs)
    torch.testing.assert_close(parts[0], whole[0])
    torch.testing.assert_close(parts[1], whole[1])


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("name", POLICY_LOSSES.names())
def test_masked_tokens_change_nothing(name, agg):
    logprobs, old, advantages, mask, weights = random_batch(6)
    noise = random_batch(7)
    padded = [torch.where(mask.bool(), x, y) for x, y in zip((logprobs, old, advantages, weights), noise)]
    options = OPTIONS[name][-1]

    def run(lp, old_lp, adv, w):
        return loss_and_grad(lambda x: compute_policy_loss(name, x, old_lp, adv, mask, agg=agg, rollout_is_weights=w,
                                                           generator=torch.Generator().manual_seed(0), **options), lp)

    clean, noisy = run(logprobs, old, advantages, weights), run(*padded)
    torch.testing.assert_close(clean[0], noisy[0])
    torch.testing.assert_close(clean[1], noisy[1])
    assert (noisy[1][mask == 0] == 0).all()
    for key in clean[2]:
        torch.testing.assert_close(clean[2][key], noisy[2][key])


@pytest.mark.parametrize("name", POLICY_LOSSES.names())
def test_gradients_finite_at_extreme_ratios(name):
    logprobs, old, advantages, mask, weights = random_batch(8)
    old[1, :4] = torch.tensor([-30.0, -1.0, -25.0, -1e-3])
    logprobs[1, :4] = torch.tensor([-5.0, -26.0, -1e-3, -25.0])  # ratios e^25, e^-25, ~e^25, ~e^-25
    for options in OPTIONS[name]:
        loss, grad, metrics = loss_and_grad(
            lambda lp: compute_policy_loss(name, lp, old, advantages, mask, rollout_is_weights=weights, **options),
            logprobs,
        )
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert all(torch.isfinite(value) for value in metrics.values())
        assert grad.abs().sum() > 0


def clip_cov_eligible(logprobs, old, advantages, mask, clip_high, lb, ub):
    """Tokens clip_cov may cut: valid, not clipped by the ratio clip, lb < centred covariance < ub."""
    valid = mask.bool()
    cov = (advantages - advantages[valid].mean()) * (logprobs - logprobs[valid].mean())
    ratio = (logprobs - old).exp()
    clipped = -advantages * ratio.clamp(0.8, 1 + clip_high) > -advantages * ratio
    return valid & ~clipped & (cov > lb) & (cov < ub)


def test_clip_cov_draws_from_its_generator():
    """The cut is ``clip_cov_ratio`` of the valid tokens, among the eligible ones only, fixed by the seed."""
    logprobs, old, advantages, mask, _ = random_batch(0)
    options = OPTIONS["clip_cov"][-1]
    eligible = clip_cov_eligible(logprobs, old, advantages, mask, 0.28, 0.05, 3.0)
    count = max(int(0.1 * float(mask.sum())), 1)
    assert int(eligible.sum()) > count  # so the draw matters
    cuts = []
    for seed in [0, 1, 2, 3, 0]:
        inputs = PolicyLossInputs(logprobs, old, advantages, mask, generator=torch.Generator().manual_seed(seed))
        loss_mat, metrics = POLICY_LOSSES["clip_cov"](inputs, **options)
        cut = (loss_mat == 0) & mask.bool()
        assert int(cut.sum()) == count and not (cut & ~eligible).any()
        assert metrics["clipfrac"].item() == pytest.approx(count / float(mask.sum()))
        cuts.append(cut)
    assert torch.equal(cuts[0], cuts[-1])  # same seed, same tokens
    assert any(not torch.equal(cuts[0], cut) for cut in cuts[1:4])  # other seeds, other tokens


def test_unknown_option_lists_the_loss_options():
    logprobs, old, advantages, mask, _ = random_batch(0)
    with pytest.raises(ValueError, match=r"'gspo' has no option clip_c; it takes: clip_low=0.2, clip_high=0.2$"):
        compute_policy_loss("gspo", logprobs, old, advantages, mask, clip_c=3.0)
    with pytest.raises(ValueError, match=r"'gpg' has no option clip_high, tau_pos; it takes: no options"):
        compute_policy_loss("gpg", logprobs, old, advantages, mask, tau_pos=1.0, clip_high=0.2)


def test_unknown_name_lists_the_known_ones():
    logprobs, old, advantages, mask, _ = random_batch(0)
    known = ", ".join(POLICY_LOSSES.names())
    with pytest.raises(KeyError, match=f"unknown policy loss 'grpo'; known: {known}"):
        compute_policy_loss("grpo", logprobs, old, advantages, mask)
