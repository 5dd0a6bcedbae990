"""Numbers: rollout correction (IS weights, rejection masks, mismatch metrics) against verl 0.9.1.

verl's ``verl.trainer.ppo.rollout_corr_helper`` is called on the same tensors in every mode combination
and the weights, the returned mask and every metric are compared (verl's ``rollout_corr/`` prefix
removed). Installing verl: see ``tests/test_parity_verl.py``. Without verl the module is skipped, except
under CI (``CI`` set), where a missing verl is an error. Hand-computed cases and the deliberate
differences listed in ``algorithms/rollout_correction.py`` are checked too.
"""

from __future__ import annotations

import math

import pytest
import torch

from algorithms import (
    IS_LEVELS,
    REJECTION_MODES,
    aggregate_loss,
    policy_loss,
    rollout_correction,
    rollout_mismatch_metrics,
)
from algorithms.rollout_correction import parse_is_threshold, parse_rs_thresholds
from tests.peers import verl_module

helper = verl_module("verl.trainer.ppo.rollout_corr_helper")
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.config.algorithm import RolloutCorrectionConfig  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402
from verl.workers.config.actor import PolicyLossConfig  # noqa: E402

torch.set_num_threads(1)

BATCH, WIDTH = 10, 12


def random_batch(seed: int, dtype: torch.dtype = torch.float64):
    """Uneven lengths (one empty row, one of length 1, one full), holes inside responses, garbage on
    padding, small log-prob gaps plus a few large ones (beyond the exp(+-20) safety bound too)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, WIDTH + 1, (BATCH,), generator=gen)
    lengths[0], lengths[1], lengths[2] = 0, 1, WIDTH
    mask = (torch.arange(WIDTH)[None] < lengths[:, None]).to(dtype)
    holes = (torch.rand(BATCH, WIDTH, generator=gen) < 0.1) & (torch.arange(WIDTH)[None] < lengths[:, None] - 1)
    mask[holes] = 0.0
    old = -torch.rand(BATCH, WIDTH, generator=gen, dtype=dtype) * 4
    rollout = old + 0.15 * torch.randn(BATCH, WIDTH, generator=gen, dtype=dtype)
    big = torch.rand(BATCH, WIDTH, generator=gen) < 0.08
    rollout[big] += 3.0 * torch.randn(int(big.sum()), generator=gen, dtype=dtype)
    rollout[3, 0] += 30.0  # log rho = -30: past the safety bound
    rollout[4, 1] -= 25.0  # log rho = +25
    padding = mask == 0
    old[padding] = 40 * torch.randn(int(padding.sum()), generator=gen, dtype=dtype)  # finite garbage
    return old, rollout, mask


def verl_correction(old, rollout, mask, **kwargs):
    proto, new_mask, metrics = helper.compute_rollout_correction_and_rejection_mask(
        old_log_prob=old, rollout_log_prob=rollout, response_mask=mask, **kwargs
    )
    weights = None if proto is None else proto.batch["rollout_is_weights"]
    return weights, new_mask, {key.removeprefix("rollout_corr/"): value for key, value in metrics.items()}


def assert_same_metrics(ours: dict, theirs: dict, rtol: float = 1e-7, atol: float = 1e-9):
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        value = ours[key]
        if isinstance(value, torch.Tensor):
            assert value.dim() == 0 and not value.requires_grad, key
        assert math.isclose(float(value), theirs[key], rel_tol=rtol, abs_tol=atol), (key, float(value), theirs[key])


IS_SETTINGS = {  # name: rollout_is, rollout_is_threshold
    "off": (None, 2.0),
    "token-tis": ("token", 2.0),
    "token-icepop": ("token", "0.5_2.0"),
    "sequence-tis": ("sequence", 5.0),
    "sequence-tis-string": ("sequence", " 3 "),
    "sequence-icepop": ("sequence", "0.2_5"),
}
RS_SETTINGS = {  # rollout_rs: rollout_rs_threshold, chosen so that each binds on some tokens and not all
    None: None,
    "token_k1": "0.8_1.25",
    "token_k2": 0.05,
    "token_k3": "0.05",
    "seq_sum_k1": "0.3_3.0",
    "seq_sum_k2": 0.5,
    "seq_sum_k3": 1.0,
    "seq_mean_k1": 1.1,  # one number: bounds [1/1.1, 1.1]
    "seq_mean_k2": 0.02,
    "seq_mean_k3": 0.02,
    "seq_max_k2": 0.1,
    "seq_max_k3": 0.1,
    "token_k1,seq_mean_k3": "0.5_2.0,0.02",
    "seq_max_k3, seq_max_k3": 0.1,  # duplicates dropped
}


IS_CASES = [(name, normalize) for name in IS_SETTINGS for normalize in (False, True) if name != "off" or not normalize]


@pytest.mark.parametrize("rs", list(RS_SETTINGS), ids=str)
@pytest.mark.parametrize("is_setting, normalize", IS_CASES, ids=[f"{n}-{'norm' if b else 'raw'}" for n, b in IS_CASES])
def test_parity_with_verl(is_setting, normalize, rs):
    level, is_threshold = IS_SETTINGS[is_setting]
    settings = dict(
        rollout_is=level,
        rollout_is_threshold=is_threshold,
        rollout_is_batch_normalize=normalize,
        rollout_rs=rs,
        rollout_rs_threshold=RS_SETTINGS[rs],
    )
    for seed in (0, 1):
        old, rollout, mask = random_batch(seed)
        weights, new_mask, metrics = rollout_correction(old, rollout, mask, **settings)
        verl_weights, verl_mask, verl_metrics = verl_correction(old, rollout, mask, **settings)
        assert_same_metrics(metrics, verl_metrics)
        torch.testing.assert_close(new_mask, verl_mask, rtol=0, atol=0)
        assert new_mask.dtype == mask.dtype
        assert bool((new_mask <= mask).all())  # rejection only ever removes tokens
        if level is None:
            assert weights is None and verl_weights is None
        else:
            torch.testing.assert_close(weights, verl_weights, rtol=1e-7, atol=1e-12)
            assert bool((weights[mask == 0] == 0).all())
            assert metrics["rollout_is_ratio_fraction_high"] > 0  # the threshold binds
        if rs is None:
            torch.testing.assert_close(new_mask, mask, rtol=0, atol=0)
        else:
            assert 0 < metrics["rollout_rs_masked_fraction"] < 1  # binds on some tokens, not all


@pytest.mark.parametrize("rs", ["token_k1", "seq_mean_k3"])
def test_parity_in_float32(rs):
    old, rollout, mask = random_batch(2, torch.float32)
    settings = dict(rollout_is="sequence", rollout_is_batch_normalize=True, rollout_rs=rs,
                    rollout_rs_threshold=RS_SETTINGS[rs])
    weights, new_mask, metrics = rollout_correction(old, rollout, mask, **settings)
    verl_weights, verl_mask, verl_metrics = verl_correction(old, rollout, mask, **settings)
    assert_same_metrics(metrics, verl_metrics, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, verl_weights)
    torch.testing.assert_close(new_mask, verl_mask, rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mismatch_metrics_parity(seed):
    old, rollout, mask = random_batch(seed)
    theirs = helper.compute_rollout_corr_metrics_from_logprobs(old, rollout, mask)
    assert_same_metrics(rollout_mismatch_metrics(old, rollout, mask),
                        {key.removeprefix("rollout_corr/"): value for key, value in theirs.items()})


# -------------------------------------------------------------------------------- threshold parsing

GOOD_IS = [2.0, 2, "2.0", " 1.5 ", "0.5_2.0", "0.5_0.5", "1e-3_1e3", "inf"]
BAD_IS = ["", "abc", "2_1", "0_2", "0.5_x", "-1", 0, -2.0, "0", True, None, [2.0], "nan"]


@pytest.mark.parametrize("spec", GOOD_IS, ids=repr)
def test_is_threshold_parsed_as_verl(spec):
    upper, lower = helper._parse_rollout_is_threshold(spec)
    assert parse_is_threshold(spec) == (upper, lower)


@pytest.mark.parametrize("spec", BAD_IS, ids=repr)
def test_bad_is_threshold_says_what_is_expected(spec):
    with pytest.raises((ValueError, TypeError), match="expected"):
        parse_is_threshold(spec)
    if spec != "nan":  # verl takes NaN as a bound (every comparison with it is then false)
        with pytest.raises((ValueError, TypeError)):
            helper._parse_rollout_is_threshold(spec)


GOOD_RS = [  # (modes, threshold)
    (["token_k1"], "0.5_2.0"),
    (["token_k1"], 2.0),
    (["token_k1"], "1.5"),
    (["seq_sum_k2"], 0.5),
    (["seq_max_k3"], "3"),
    (["token_k1", "seq_mean_k3"], "0.8_1.2, 0.01"),
    (["token_k1", "seq_mean_k3", "seq_sum_k1"], "2.0"),
]
BAD_RS = [
    (["token_k2"], "0.5_2.0"),  # k2/k3 take one upper bound
    (["token_k2"], "0.5_2"),  # float() would read it as 0.52
    (["token_k1"], "2.0_0.5"),  # lower > upper
    (["token_k1"], "0"),
    (["token_k1"], "-2"),
    (["token_k1"], "a_b"),
    (["seq_mean_k3"], "abc"),
    (["seq_mean_k3"], -0.1),
    (["seq_mean_k3"], ""),
    (["token_k1", "seq_mean_k3"], "1,2,3"),  # neither one nor one per mode
    (["token_k1"], None),
    (["token_k2"], True),
]


@pytest.mark.parametrize("modes, spec", GOOD_RS)
def test_rs_thresholds_parsed_as_verl(modes, spec):
    ours = parse_rs_thresholds(modes, spec)
    for mode, bounds in helper._parse_rollout_rs_thresholds(modes, spec).items():
        two_sided = bounds["lower"] is not None
        assert two_sided == REJECTION_MODES[mode].ratio_bounds
        expected_upper = math.log(bounds["upper"]) if two_sided else bounds["upper"]
        expected_lower = math.log(bounds["lower"]) if two_sided else None
        assert ours[mode] == (pytest.approx(expected_upper), expected_lower and pytest.approx(expected_lower))


@pytest.mark.parametrize("modes, spec", BAD_RS)
def test_bad_rs_threshold_says_what_is_expected(modes, spec):
    with pytest.raises((ValueError, TypeError), match="expected"):
        parse_rs_thresholds(modes, spec)
    with pytest.raises((ValueError, TypeError, ZeroDivisionError)):
        helper._parse_rollout_rs_thresholds(modes, spec)
        if spec is not None:  # verl parses some of these, then rejects them while masking
            helper.compute_rollout_rejection_mask(torch.zeros(1, 2), torch.ones(1, 2), ",".join(modes), spec)


def test_unknown_modes_list_the_known_ones():
    old, rollout, mask = random_batch(0)
    with pytest.raises(KeyError, match="known: sequence, token"):
        rollout_correction(old, rollout, mask, rollout_is="geometric")
    with pytest.raises(KeyError, match="known: seq_max_k2, seq_max_k3, seq_mean_k1"):
        rollout_correction(old, rollout, mask, rollout_rs="token_k1,seq_max_k1", rollout_rs_threshold=2.0)
    with pytest.raises(ValueError, match="expected one or more of"):
        rollout_correction(old, rollout, mask, rollout_rs=" , ", rollout_rs_threshold=2.0)
    with pytest.raises(ValueError, match="needs rollout_rs_threshold"):
        rollout_correction(old, rollout, mask, rollout_rs="token_k3")
    assert IS_LEVELS.names() == ["sequence", "token"]
    assert set(REJECTION_MODES.names()) == helper.SUPPORTED_ROLLOUT_RS_OPTIONS


def test_bad_inputs():
    old, rollout, mask = random_batch(0)
    with pytest.raises(ValueError, match="shapes differ"):
        rollout_correction(old, rollout[:, :-1], mask)
    with pytest.raises(ValueError, match="at least one valid token"):
        rollout_correction(old, rollout, torch.zeros_like(mask))


# ----------------------------------------------------------------------------------------- by hand

def one_row(ratios: list[float]):
    """One sequence whose tokens have pi_old / pi_rollout = ``ratios``."""
    rollout = torch.full((1, len(ratios)), -1.0, dtype=torch.float64)
    old = rollout + torch.tensor([ratios], dtype=torch.float64).log()
    return old, rollout, torch.ones_like(old)


def test_token_ratio_five_truncated_by_tis_zeroed_by_icepop():
    old, rollout, mask = one_row([5.0, 1.5, 0.25])
    tis, tis_mask, _ = rollout_correction(old, rollout, mask, rollout_is="token", rollout_is_threshold=2.0)
    torch.testing.assert_close(tis, torch.tensor([[2.0, 1.5, 0.25]], dtype=torch.float64))
    icepop, icepop_mask, metrics = rollout_correction(old, rollout, mask, rollout_is="token",
                                                     rollout_is_threshold="0.5_2.0")
    torch.testing.assert_close(icepop, torch.tensor([[0.0, 1.5, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(icepop_mask, mask)  # IcePop zeroes weights, it does not mask tokens
    torch.testing.assert_close(tis_mask, mask)
    assert float(metrics["rollout_is_oob_ratio"]) == pytest.approx(2 / 3)


def test_sequence_weight_is_the_product_of_ratios():
    old, rollout, mask = one_row([2.0, 3.0, 0.5])  # product 3
    weights, _, metrics = rollout_correction(old, rollout, mask, rollout_is="sequence", rollout_is_threshold=2.0)
    torch.testing.assert_close(weights, torch.full((1, 3), 2.0, dtype=torch.float64))
    assert float(metrics["rollout_is_max"]) == pytest.approx(3.0)  # the raw sequence weight, as verl reports it
    weights, _, _ = rollout_correction(old, rollout, mask, rollout_is="sequence", rollout_is_threshold=4.0)
    torch.testing.assert_close(weights, torch.full((1, 3), 3.0, dtype=torch.float64))


def test_rejection_by_hand():
    old, rollout, mask = one_row([5.0, 1.5, 1.0, 0.9])
    _, kept, metrics = rollout_correction(old, rollout, mask, rollout_rs="token_k1", rollout_rs_threshold="0.5_2.0")
    torch.testing.assert_close(kept, torch.tensor([[0.0, 1.0, 1.0, 1.0]], dtype=torch.float64))
    assert float(metrics["rollout_rs_masked_fraction"]) == pytest.approx(0.25)
    assert float(metrics["rollout_rs_seq_masked_fraction"]) == 1.0
    # k1 bounds apply to pi_rollout / pi_old: rho = 1.5 is 0.667 the other way, below 0.8, so it goes
    _, kept, _ = rollout_correction(old, rollout, mask, rollout_rs="token_k1", rollout_rs_threshold="0.8_1.6")
    torch.testing.assert_close(kept, torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64))
    # one bad token takes its whole sequence with it under a sequence mode: k2 of rho = 5 is 1.295
    _, kept, _ = rollout_correction(old, rollout, mask, rollout_rs="seq_max_k2", rollout_rs_threshold=1.0)
    torch.testing.assert_close(kept, torch.zeros_like(mask))
    _, kept, _ = rollout_correction(old, rollout, mask, rollout_rs="seq_max_k2", rollout_rs_threshold=1.3)
    torch.testing.assert_close(kept, mask)


def test_batch_normalised_weights_average_one():
    old, rollout, mask = random_batch(3)
    weights, _, metrics = rollout_correction(old, rollout, mask, rollout_is="token", rollout_is_batch_normalize=True)
    assert float((weights * mask).sum() / mask.sum()) == pytest.approx(1.0)
    raw, _, _ = rollout_correction(old, rollout, mask, rollout_is="token")
    torch.testing.assert_close(weights * metrics["rollout_is_batch_norm_factor"], raw)
    weights, _, _ = rollout_correction(old, rollout, mask, rollout_is="sequence", rollout_is_batch_normalize=True)
    rows = mask.sum(-1) > 0
    assert float(weights.max(-1).values[rows].mean()) == pytest.approx(1.0)  # one weight per sequence


def test_no_mismatch_reads_as_none():
    old, _, mask = random_batch(4)
    weights, kept, metrics = rollout_correction(old, old.clone(), mask, rollout_is="token", rollout_rs="token_k3",
                                                rollout_rs_threshold=1e-6)
    torch.testing.assert_close(weights, mask)
    torch.testing.assert_close(kept, mask)
    for key in ("kl", "k3_kl", "chi2_token", "chi2_seq", "log_ppl_diff", "rollout_rs_masked_fraction"):
        assert float(metrics[key]) == pytest.approx(0.0, abs=1e-12), key
    assert float(metrics["ppl_ratio"]) == pytest.approx(1.0)
    assert float(metrics["rollout_is_eff_sample_size"]) == pytest.approx(1.0)


# ------------------------------------------------------------------------------- contracts, departures

def test_weights_and_metrics_are_detached():
    old, rollout, mask = random_batch(0)
    old = old.clone().requires_grad_(True)
    settings = dict(rollout_is="sequence", rollout_is_batch_normalize=True, rollout_rs="token_k2",
                    rollout_rs_threshold=0.05)
    weights, kept, metrics = rollout_correction(old, rollout, mask, **settings)
    assert not weights.requires_grad and not kept.requires_grad
    assert not any(isinstance(v, torch.Tensor) and v.requires_grad for v in metrics.values())


def test_mask_is_a_copy_and_keeps_its_dtype():
    old, rollout, mask = random_batch(0)
    _, kept, _ = rollout_correction(old, rollout, mask)
    assert kept is not mask
    bool_mask = mask.bool()
    _, kept, _ = rollout_correction(old, rollout, bool_mask, rollout_rs="token_k2", rollout_rs_threshold=0.05)
    assert kept.dtype == torch.bool and bool((kept <= bool_mask).all())


@pytest.mark.parametrize("fill", [float("nan"), float("-inf"), float("inf")])
def test_non_finite_padding_changes_nothing(fill):
    """Deliberate difference: padding reads as log-prob 0 (verl turns a NaN log-ratio there into NaN weights)."""
    old, rollout, mask = random_batch(1)
    settings = dict(rollout_is="token", rollout_rs="seq_mean_k3,token_k1", rollout_rs_threshold="0.02,2")
    clean = rollout_correction(old, rollout, mask, **settings)
    dirty = rollout_correction(old.masked_fill(mask == 0, fill), rollout.masked_fill(mask == 0, fill), mask, **settings)
    torch.testing.assert_close(dirty[0], clean[0])
    torch.testing.assert_close(dirty[1], clean[1])
    assert_same_metrics(dirty[2], {key: float(value) for key, value in clean[2].items()})


def test_is_without_threshold_is_an_error():
    """Deliberate difference: verl silently skips IS when ``rollout_is_threshold`` is None."""
    old, rollout, mask = random_batch(0)
    with pytest.raises(ValueError, match="rollout_is_threshold is None"):
        rollout_correction(old, rollout, mask, rollout_is="token", rollout_is_threshold=None)
    assert verl_correction(old, rollout, mask, rollout_is="token", rollout_is_threshold=None)[0] is None


# ----------------------------------------------------------------------------------------- bypass mode

def bypass_config(loss_type: str, **correction) -> ActorConfig:
    return ActorConfig(
        strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=0.2, clip_ratio_low=0.2,
        clip_ratio_high=0.2, clip_ratio_c=1e10, loss_agg_mode="token-mean", global_batch_info={},
        policy_loss=PolicyLossConfig(
            loss_mode="bypass_mode",
            rollout_correction=RolloutCorrectionConfig(bypass_mode=True, loss_type=loss_type, **correction),
        ),
    )


@pytest.mark.parametrize("loss_type", ["ppo_clip", "reinforce"])
def test_bypass_mode_loss_is_ours_against_the_sampler(loss_type):
    """What the module docstring says the trainer must do in bypass mode reproduces verl's bypass loss:
    pi_old := pi_rollout; correction of the current policy against the sampler on each micro-batch; PPO-clip
    under the rejection mask (IS weights unused), or REINFORCE -w A log pi under it."""
    current, rollout, mask = random_batch(5)
    advantages = torch.randn(current.shape, generator=torch.Generator().manual_seed(0), dtype=current.dtype)
    current = torch.where(mask.bool(), current, -1.0)  # a real policy has finite log-probs on padding
    correction = dict(rollout_is="token", rollout_is_threshold=2.0, rollout_rs="token_k1",
                      rollout_rs_threshold="0.5_2.0")
    weights, kept, _ = rollout_correction(current, rollout, mask, **correction)
    if loss_type == "ppo_clip":
        ours, _ = policy_loss(current, rollout, advantages, kept)
    else:
        ours = aggregate_loss(-advantages * current * weights, kept, "token-mean")
    theirs, _ = core_algos.compute_policy_loss_bypass_mode(
        old_log_prob=rollout, log_prob=current, advantages=advantages, response_mask=mask,
        loss_agg_mode="token-mean", config=bypass_config(loss_type, **correction),
    )
    torch.testing.assert_close(ours, theirs)


def test_verl_bypass_mode_hands_the_sampler_log_probs_over_as_pi_old():
    from omegaconf import OmegaConf
    from verl.protocol import DataProto

    _, rollout, mask = random_batch(0)
    batch = DataProto.from_dict(tensors={"rollout_log_probs": rollout, "response_mask": mask})
    loss_config = OmegaConf.create({"loss_mode": "vanilla"})
    helper.apply_bypass_mode(batch, OmegaConf.create({"bypass_mode": True}), loss_config)
    torch.testing.assert_close(batch.batch["old_log_probs"], rollout)
    assert loss_config.loss_mode == "bypass_mode"
    with pytest.raises(ValueError, match="requires rollout_log_probs"):
        helper.apply_bypass_mode(DataProto.from_dict(tensors={"response_mask": mask}), None, loss_config)


def test_every_mode_combination_is_tested():
    assert {name for names in RS_SETTINGS if names for name in names.replace(" ", "").split(",")} == set(
        REJECTION_MODES.names()
    )
    assert {level for level, _ in IS_SETTINGS.values() if level} == set(IS_LEVELS.names())
