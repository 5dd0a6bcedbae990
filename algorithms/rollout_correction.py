"""Rollout correction: the sampler's log-probs differ from the trainer's, so correct or reject tokens.

The sampler (vLLM in bf16, say) draws responses from pi_rollout, while the trainer scores the same
tokens as pi_old; even with the same weights the two differ, and the gap grows with staleness. With
rho_t = pi_old(y_t) / pi_rollout(y_t) (shapes: B samples, T response tokens):

- importance sampling (IS) reweights each token's loss by a detached weight: rho_t per token
  (``"token"``) or prod_t rho_t per sequence (``"sequence"``), bounded either by truncation at an
  upper bound (TIS, Yao et al. 2025, https://fengyao.notion.site/off-policy-rl: w = min(rho, C)) or,
  with a ``"lower_upper"`` threshold, by zeroing weights outside [lower, upper] (IcePop, arXiv
  2510.18855: M(k) = k on [alpha, beta], 0 elsewhere). IcePop zeroes the *weight*; the token
  stays in the response mask, so it still counts in a token-mean's denominator, as in verl.
- rejection sampling (RS) removes tokens or whole sequences from the response mask when a divergence
  estimate between pi_old and pi_rollout leaves its bounds (Liu et al. 2025, "When Speed Kills
  Stability", https://richardli.xyz/rl-collapse). With r = log rho clamped to [-20, 20], the per-token
  estimates are k1 = -r, k2 = r^2 / 2 and k3 = exp(r) - 1 - r (Schulman,
  http://joschu.net/blog/kl-approx.html); a mode applies one per token (``token_k*``) or to each
  sequence's sum, mean or max (``seq_sum_k*``, ``seq_mean_k*``, ``seq_max_k2/k3``). Several modes can
  be chained with commas; a token survives only if every mode keeps it. k1 modes take ratio bounds
  ``"lower_upper"`` and keep k1 in [log lower, log upper], i.e. pi_rollout / pi_old in [lower, upper]
  (a single number C means [1/C, C]); k2/k3 modes take one upper bound.

Everything here equals verl 0.9.1's ``verl.trainer.ppo.rollout_corr_helper`` (weights, mask and every
metric, names without verl's ``rollout_corr/`` prefix); ``tests/test_rollout_correction.py`` checks it
in every mode. Threshold strings are parsed as verl parses them. Where we depart from verl, on purpose:
- positions outside ``response_mask`` are read as log-prob 0, so a NaN or inf there (``-inf`` padding)
  changes nothing; verl carries a NaN log-ratio on padding into the weights (NaN * 0 = NaN).
- ``rollout_is`` set with ``rollout_is_threshold=None`` is an error; verl silently skips IS then.
- an unknown IS level or RS mode raises ``KeyError`` listing the known ones (verl: ``ValueError``); a
  boolean or NaN threshold raises too (verl takes NaN, and fails on a boolean RS threshold only by
  accident of ``float("True")``).
- batch normalisation of the weights averages over the tensors given; verl all-reduces the mean when
  ``torch.distributed`` is initialised. Call this once on the whole batch, before splitting it.
- metrics are 0-d tensors (verl calls ``.item()`` on each); the caller converts when it logs.
verl's own quirks are kept. A fully masked row still counts in its means over rows: as log-ratio 0 and
perplexity 1 (``*_ppl``, ``log_ppl_*``, ``chi2_seq``; sequence-level ``rollout_is_max/min/ratio_fraction_*``),
as mean weight 0 (``rollout_is_seq_*``) and as an untouched sequence (``rollout_rs_seq_masked_fraction``).

Decoupled use (verl's default): once per batch, after pi_old is recomputed and before advantages, call
``rollout_correction(old_logprobs, sample_logprobs, response_mask, ...)``; the returned mask replaces
the response mask from then on, and the policy loss multiplies each token's loss by the weight.

Bypass mode (verl's ``apply_bypass_mode``) is not a function here, because it is wiring, not math:
verl copies ``rollout_log_probs`` into ``old_log_probs`` (raising if the sampler gave none), skips the
old-log-prob forward pass and the decoupled correction above, and switches the actor's policy loss to
``bypass_mode``. That loss computes the equivalent of ``rollout_correction(logprobs, sample_logprobs,
mask, ...)`` on every micro-batch, under ``no_grad``, with the *current* policy's log-probs first, and
logs its metrics with the loss's; the RS mask is the loss's mask. With ``loss_type="ppo_clip"`` (the
default) the loss is plain PPO-clip against pi_rollout and the IS weights are only logged (the PPO
ratio already is pi_theta / pi_rollout); with ``loss_type="reinforce"`` it is -w_t A_t log pi_theta(y_t)
with the IS weights w_t and no clipping. ``tests/test_rollout_correction.py`` checks both against verl.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Union

import torch

from algorithms.masked import masked_mean, masked_sum
from algorithms.registry import Registry

SAFETY_BOUND = 20.0  # log-ratios are clamped to [-20, 20] before exp, as in verl
Threshold = Union[str, float, None]
Metrics = dict[str, Union[torch.Tensor, float]]


# ---------------------------------------------------------------------------------------------- IS


class ISBounds(NamedTuple):
    """Bounds on an IS weight: truncate at ``upper`` (TIS) or, with ``lower``, zero it outside (IcePop)."""

    upper: float
    lower: Optional[float] = None

    @property
    def floor(self) -> float:
        """The low mark the metrics count against: ``lower``, else 1 / ``upper``."""
        return 1.0 / self.upper if self.lower is None else self.lower

    def apply(self, raw: torch.Tensor) -> torch.Tensor:
        """Bounded weights, same shape as ``raw``."""
        if self.lower is None:
            return raw.clamp(max=self.upper)
        inside = (raw >= self.lower) & (raw <= self.upper)
        return torch.where(inside, raw, torch.zeros_like(raw))


def parse_is_threshold(spec: Threshold) -> ISBounds:
    """``2.0`` or ``"2.0"`` -> truncate at 2 (TIS); ``"0.5_2.0"`` -> zero outside [0.5, 2] (IcePop)."""
    expected = "expected a positive number (TIS upper bound) or a 'lower_upper' string like '0.5_2.0' (IcePop)"
    if isinstance(spec, bool) or not isinstance(spec, (int, float, str)):
        raise TypeError(f"rollout_is_threshold {spec!r}: {expected}")
    text = str(spec).strip()
    try:
        parts = [float(part) for part in text.split("_", 1)]
    except ValueError:
        raise ValueError(f"rollout_is_threshold {spec!r}: {expected}") from None
    bounds = ISBounds(upper=parts[-1], lower=parts[0] if len(parts) == 2 else None)
    if not bounds.upper > 0 or not (bounds.lower is None or 0 < bounds.lower <= bounds.upper):
        raise ValueError(f"rollout_is_threshold {spec!r}: {expected}, with 0 < lower <= upper")
    return bounds


class LevelWeights(NamedTuple):
    raw: torch.Tensor  # (B, T) unbounded weight of each token (its sequence's, at sequence level), 0 on padding
    shares: torch.Tensor  # (B, T) each token's share in the batch mean of the weights
    extremes: Metrics  # rollout_is_max / _min / _ratio_fraction_high / _ratio_fraction_low


# (log_ratio (B, T), response_mask (B, T) float, bounds) -> LevelWeights
ISLevel = Callable[[torch.Tensor, torch.Tensor, ISBounds], LevelWeights]
IS_LEVELS: Registry[ISLevel] = Registry("rollout IS level")


@IS_LEVELS.register("token")
def token_weights(log_ratio: torch.Tensor, response_mask: torch.Tensor, bounds: ISBounds) -> LevelWeights:
    """w_t = rho_t per token (Token-TIS: Yao et al. 2025; IcePop: arXiv 2510.18855, its mask M(k)).

    Biased (each token is corrected alone, not its prefix), low variance. Extremes are those of the
    bounded weights; the high/low fractions count raw weights past ``upper`` and below
    ``bounds.floor``, as verl does.
    """
    raw = log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND).exp() * response_mask
    valid = response_mask.bool()
    applied = bounds.apply(raw)[valid]
    return LevelWeights(raw, response_mask, {
        "rollout_is_max": applied.max(),
        "rollout_is_min": applied.min(),
        "rollout_is_ratio_fraction_high": masked_mean((raw > bounds.upper).to(raw.dtype), response_mask),
        "rollout_is_ratio_fraction_low": masked_mean((raw < bounds.floor).to(raw.dtype), response_mask),
    })


@IS_LEVELS.register("sequence")
def sequence_weights(log_ratio: torch.Tensor, response_mask: torch.Tensor, bounds: ISBounds) -> LevelWeights:
    """w_i = prod_t rho_{i,t} for every token of sequence i (Seq-TIS / Seq-MIS, Liu et al. 2025, "When Speed
    Kills Stability", https://richardli.xyz/rl-collapse): unbiased for the sequence, high variance.

    Extremes come from the unclamped log-weights of all B rows (an empty row has weight 1), the max
    capped at exp(20), before bounding, as verl does. In the batch mean each non-empty sequence
    counts once, whatever its length.
    """
    log_seq = masked_sum(log_ratio, response_mask, dim=-1)  # (B,)
    raw = log_seq.clamp(-SAFETY_BOUND, SAFETY_BOUND).exp()[:, None] * response_mask
    shares = response_mask / response_mask.sum(-1, keepdim=True).clamp(min=1)
    return LevelWeights(raw, shares, {
        "rollout_is_max": log_seq.max().clamp(max=SAFETY_BOUND).exp(),
        "rollout_is_min": log_seq.min().exp(),
        "rollout_is_ratio_fraction_high": (log_seq > math.log(bounds.upper)).to(raw.dtype).mean(),
        "rollout_is_ratio_fraction_low": (log_seq < math.log(bounds.floor)).to(raw.dtype).mean(),
    })


def weight_spread_metrics(
    weights: torch.Tensor, raw: torch.Tensor, response_mask: torch.Tensor, bounds: ISBounds
) -> Metrics:
    """Mean, std, ESS and per-sequence figures of the bounded ``weights`` (B, T) (verl's ``compute_is_metrics``).

    ESS is Kish's 1 / E[(w / E[w])^2] over valid tokens (1 when all weights are equal).
    """
    capped = weights.clamp(min=0.0, max=bounds.upper)
    mean = masked_mean(capped, response_mask)
    var = masked_mean(capped.square(), response_mask) - mean.square()
    std = var.clamp(min=0.0).sqrt() if response_mask.sum() > 1 else torch.zeros_like(mean)
    seq_mean = masked_mean(weights, response_mask, dim=-1)  # (B,)
    raw_seq_mean = masked_mean(raw, response_mask, dim=-1)
    metrics: Metrics = {
        "rollout_is_mean": masked_mean(weights, response_mask),
        "rollout_is_std": std,
        "rollout_is_eff_sample_size": 1.0 / masked_mean((capped / (mean + 1e-8)).square(), response_mask),
        "rollout_is_seq_mean": seq_mean.mean(),
        "rollout_is_seq_std": seq_mean.std() if seq_mean.numel() > 1 else torch.zeros_like(mean),
        "rollout_is_seq_max": seq_mean.max(),
        "rollout_is_seq_min": seq_mean.min(),
        "rollout_is_seq_max_deviation": (seq_mean - 1.0).abs().max(),
        "rollout_is_seq_fraction_high": (raw_seq_mean > bounds.upper).to(raw.dtype).mean(),
        "rollout_is_seq_fraction_low": (raw_seq_mean < bounds.floor).to(raw.dtype).mean(),
    }
    if bounds.lower is not None:
        outside = (raw < bounds.lower) | (raw > bounds.upper)
        metrics["rollout_is_oob_ratio"] = masked_mean(outside.to(raw.dtype), response_mask)
    return metrics


def importance_weights(
    log_ratio: torch.Tensor, response_mask: torch.Tensor, level: str, threshold: Threshold, batch_normalize: bool
) -> tuple[torch.Tensor, Metrics]:
    """Detached bounded IS weights (B, T), 0 on padding, and their metrics.

    verl's ``compute_rollout_correction_weights``.

    ``batch_normalize`` divides the weights by their batch mean (over tokens, or over sequences at
    sequence level) so they average 1; the metrics other than ``rollout_is_batch_norm_factor``
    describe the weights before that division.
    """
    bounds = parse_is_threshold(threshold)
    level_weights = IS_LEVELS[level](log_ratio, response_mask, bounds)
    weights = bounds.apply(level_weights.raw)
    metrics = dict(level_weights.extremes)
    metrics.update(weight_spread_metrics(weights, level_weights.raw, response_mask, bounds))
    if batch_normalize:
        shares = level_weights.shares
        batch_mean = (weights * shares).sum() / shares.sum()
        factor = torch.where(batch_mean > 1e-8, batch_mean, torch.ones_like(batch_mean))
        weights = weights / factor
        metrics["rollout_is_batch_norm_factor"] = factor
    return weights.detach(), metrics


# ---------------------------------------------------------------------------------------------- RS


@dataclass(frozen=True)
class RejectionMode:
    """One ``rollout_rs`` mode: a per-token divergence, optionally reduced to one number per sequence."""

    divergence: Callable[[torch.Tensor], torch.Tensor]  # clamped log rho (B, T) -> (B, T)
    reduce: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]  # ((B, T), mask) -> (B,); None: per token
    ratio_bounds: bool  # k1: bounded on both sides by "lower_upper" ratio bounds; k2, k3: above only

    def __call__(self, log_ratio: torch.Tensor, response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(statistic of each token (B, T), of each sequence (B,)); per token, a sequence's is its token mean."""
        per_token = self.divergence(log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND))
        if self.reduce is None:
            return per_token, masked_mean(per_token, response_mask, dim=-1)
        per_seq = self.reduce(per_token, response_mask)
        return per_seq[:, None].expand_as(per_token), per_seq


def _masked_max(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Row max over valid tokens, (B, T) -> (B,); 0 for an empty row."""
    top = values.masked_fill(~response_mask.bool(), float("-inf")).max(-1).values
    return torch.where(torch.isneginf(top), torch.zeros_like(top), top)


REJECTION_MODES: Registry[RejectionMode] = Registry("rollout rejection mode")


def _register_rejection_modes() -> None:
    """``{token,seq_sum,seq_mean,seq_max}_{k1,k2,k3}`` without ``seq_max_k1``: verl 0.9.1's eleven modes."""
    divergences = {
        "k1": lambda r: -r,  # log pi_rollout - log pi_old
        "k2": lambda r: 0.5 * r.square(),
        "k3": lambda r: r.exp() - 1.0 - r,
    }
    reductions = {
        "token": None,
        "seq_sum": lambda values, mask: masked_sum(values, mask, dim=-1),
        "seq_mean": lambda values, mask: masked_mean(values, mask, dim=-1),
        "seq_max": _masked_max,
    }
    for reduction, reduce in reductions.items():
        for kind, divergence in divergences.items():
            if (reduction, kind) != ("seq_max", "k1"):
                REJECTION_MODES.register(f"{reduction}_{kind}")(RejectionMode(divergence, reduce, kind == "k1"))


_register_rejection_modes()


class RSBounds(NamedTuple):
    upper: float  # in the statistic's units: log of the ratio bound for k1 modes
    lower: Optional[float] = None  # k1 modes only


def parse_rs_thresholds(modes: list[str], spec: Threshold) -> dict[str, RSBounds]:
    """One threshold for all ``modes`` or one per mode, comma separated, as verl parses them.

    A k1 mode takes ``"lower_upper"`` ratio bounds or one ratio C (bounds [1/C, C]), kept in log units;
    a k2/k3 mode takes one positive upper bound.
    """
    if isinstance(spec, bool) or not isinstance(spec, (int, float, str)):
        raise TypeError(f"rollout_rs_threshold {spec!r}: expected a number, or a string of comma-separated ones")
    parts = [part.strip() for part in str(spec).split(",") if part.strip()]
    if len(parts) not in (1, len(modes)):
        raise ValueError(f"rollout_rs_threshold {spec!r}: expected one threshold, or one per mode of {modes}")
    parts = parts * len(modes) if len(parts) == 1 else parts
    return {mode: _rs_bounds(mode, part) for mode, part in zip(modes, parts)}


def _rs_bounds(mode: str, part: str) -> RSBounds:
    """One mode's bounds from one threshold string, as verl's ``_parse_rollout_rs_thresholds``."""
    two_sided = REJECTION_MODES[mode].ratio_bounds
    if two_sided:
        expected = "'lower_upper' ratio bounds such as '0.5_2.0', or one ratio C for [1/C, C], all positive"
    else:
        expected = "one positive upper bound, no '_'"
    malformed = ValueError(f"rollout_rs_threshold {part!r} for {mode}: expected {expected}")
    if not two_sided and "_" in part:  # float() would read '0.5_2' as 0.52; verl refuses it
        raise malformed
    try:
        numbers = [float(x) for x in part.split("_", 1)]
    except ValueError:
        raise malformed from None
    if two_sided and len(numbers) == 1 and numbers[0] > 0:
        numbers = [1.0 / numbers[0], numbers[0]]
    if not all(x > 0 for x in numbers) or numbers[0] > numbers[-1]:
        raise malformed
    if two_sided:
        return RSBounds(upper=math.log(numbers[1]), lower=math.log(numbers[0]))
    return RSBounds(upper=numbers[0])


def rejection_statistic_metrics(
    prefix: str,
    per_token: torch.Tensor,
    per_seq: torch.Tensor,
    response_mask: torch.Tensor,
    per_sequence: bool,
    bounds: RSBounds,
) -> Metrics:
    """Figures of one mode's statistic against its bounds, named ``{prefix}_*`` (verl's ``compute_rs_metrics``).

    Max, min and the high/low fractions are over valid tokens for a token mode, over non-empty
    sequences for a sequence mode; mean and std are token-weighted; ``seq_*`` are over non-empty
    sequences. The std is that of the statistic clamped to its bounds (0 below, for k2/k3).
    """
    valid_rows = response_mask.sum(-1) > 0
    seqs = per_seq[valid_rows]
    units = seqs if per_sequence else per_token[response_mask.bool()]
    low_mark = 0.0 if bounds.lower is None else bounds.lower
    clamped = per_token.clamp(min=low_mark, max=bounds.upper)
    clamped_mean = masked_mean(clamped, response_mask)
    var = masked_mean(clamped.square(), response_mask) - clamped_mean.square()
    zero = torch.zeros_like(clamped_mean)

    def share_low(values: torch.Tensor) -> Union[torch.Tensor, float]:
        return 0.0 if bounds.lower is None else (values < bounds.lower).to(values.dtype).mean()

    metrics: Metrics = {
        f"{prefix}_mean": masked_mean(per_token, response_mask),
        f"{prefix}_max": units.max(),
        f"{prefix}_min": units.min(),
        f"{prefix}_fraction_high": (units > bounds.upper).to(units.dtype).mean(),
        f"{prefix}_fraction_low": share_low(units),
        f"{prefix}_std": var.clamp(min=0.0).sqrt() if response_mask.sum() > 1 else zero,
        f"{prefix}_seq_mean": seqs.mean(),
        f"{prefix}_seq_std": seqs.std() if seqs.numel() > 1 else zero,
        f"{prefix}_seq_max": seqs.max(),
        f"{prefix}_seq_min": seqs.min(),
        f"{prefix}_seq_max_deviation": seqs.abs().max(),
        f"{prefix}_seq_fraction_high": (seqs > bounds.upper).to(seqs.dtype).mean(),
    }
    if bounds.lower is not None:
        metrics[f"{prefix}_seq_fraction_low"] = share_low(seqs)
    return metrics


def rejected_shares(
    prefix: str, keep: torch.Tensor, response_mask: torch.Tensor, *, over_all_rows: bool = False
) -> Metrics:
    """``{prefix}_masked_fraction`` (valid tokens rejected) and ``{prefix}_seq_masked_fraction``
    (sequences with a valid token rejected, among non-empty ones, or among all B when ``over_all_rows``)."""
    rejected = ~keep & response_mask.bool()
    hit = rejected.any(-1).to(response_mask.dtype)
    rows = torch.ones_like(hit) if over_all_rows else (response_mask.sum(-1) > 0).to(hit.dtype)
    return {
        f"{prefix}_masked_fraction": masked_mean(rejected.to(response_mask.dtype), response_mask),
        f"{prefix}_seq_masked_fraction": (hit * rows).sum() / rows.sum(),
    }


def split_modes(modes: str) -> list[str]:
    """``"token_k1, seq_mean_k3"`` -> known mode names, duplicates dropped, order kept."""
    known = ", ".join(REJECTION_MODES.names())
    if not isinstance(modes, str):
        raise TypeError(f"rollout_rs {modes!r}: expected a string of comma-separated modes from {known}")
    names = list(dict.fromkeys(name.strip() for name in modes.split(",") if name.strip()))
    if not names:
        raise ValueError(f"rollout_rs {modes!r}: expected one or more of {known}, comma separated")
    for name in names:
        REJECTION_MODES[name]  # unknown names raise, listing the known ones
    return names


def rejection_mask(
    log_ratio: torch.Tensor, response_mask: torch.Tensor, modes: str, threshold: Threshold
) -> tuple[torch.Tensor, Metrics]:
    """Keep-mask (B, T) bool of the tokens every mode accepts, and metrics.

    verl's ``compute_rollout_rejection_mask``; ``modes`` is comma separated, all must accept a token.
    """
    names = split_modes(modes)
    bounds = parse_rs_thresholds(names, threshold)
    keep_all = torch.ones_like(response_mask, dtype=torch.bool)
    metrics: Metrics = {}
    for name in names:
        mode, limits, prefix = REJECTION_MODES[name], bounds[name], f"rollout_rs_{name}"
        per_token, per_seq = mode(log_ratio, response_mask)
        keep = per_token <= limits.upper
        if limits.lower is not None:
            keep &= per_token >= limits.lower
        per_sequence = mode.reduce is not None
        metrics.update(rejection_statistic_metrics(prefix, per_token, per_seq, response_mask, per_sequence, limits))
        metrics.update(rejected_shares(prefix, keep, response_mask))
        keep_all &= keep
    metrics.update(rejected_shares("rollout_rs", keep_all, response_mask, over_all_rows=True))
    return keep_all, metrics


# ----------------------------------------------------------------------------------- the entry points


def rollout_mismatch_metrics(
    old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, response_mask: torch.Tensor
) -> Metrics:
    """How far pi_old is from pi_rollout, for logging every step.

    verl's ``compute_rollout_corr_metrics_from_logprobs`` (its ``compute_offpolicy_metrics``).

    All inputs (B, T). ``kl`` = E[log pi_rollout - log pi_old] and ``k3_kl`` = E[rho - 1 - log rho]
    over valid tokens (both estimate KL(pi_rollout || pi_old)); ``*_ppl`` are batch means of each
    sequence's perplexity exp(-mean log p); ``log_ppl_diff`` = mean log p_rollout - mean log p_old per
    sequence; ``chi2_token`` = E[rho^2] - 1 over tokens, ``chi2_seq`` = E[(prod rho)^2] - 1 over
    sequences (log-ratios clamped to [-20, 20]).
    """
    mask = _check_inputs(old_logprobs, rollout_logprobs, response_mask)
    old, rollout = _zero_padding(old_logprobs, mask), _zero_padding(rollout_logprobs, mask)
    log_ratio = old - rollout
    old_mean, rollout_mean = masked_mean(old, mask, dim=-1), masked_mean(rollout, mask, dim=-1)  # (B,)
    log_ppl_diff = rollout_mean - old_mean
    seq_log_ratio = masked_sum(log_ratio, mask, dim=-1).clamp(-SAFETY_BOUND, SAFETY_BOUND)
    return {
        "training_ppl": (-old_mean).exp().mean(),
        "training_log_ppl": (-old_mean).mean(),
        "kl": masked_mean(-log_ratio, mask),
        "k3_kl": masked_mean(log_ratio.exp() - log_ratio - 1, mask),
        "rollout_ppl": (-rollout_mean).exp().mean(),
        "rollout_log_ppl": (-rollout_mean).mean(),
        "log_ppl_diff": log_ppl_diff.mean(),
        "log_ppl_abs_diff": log_ppl_diff.abs().mean(),
        "log_ppl_diff_max": log_ppl_diff.max(),
        "log_ppl_diff_min": log_ppl_diff.min(),
        "ppl_ratio": log_ppl_diff.exp().mean(),
        "chi2_token": masked_mean((2 * log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND)).exp(), mask) - 1.0,
        "chi2_seq": (2 * seq_log_ratio).exp().mean() - 1.0,
    }


def rollout_correction(
    old_logprobs: torch.Tensor,
    rollout_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    rollout_is: Optional[str] = None,
    rollout_is_threshold: Threshold = 2.0,
    rollout_is_batch_normalize: bool = False,
    rollout_rs: Optional[str] = None,
    rollout_rs_threshold: Threshold = None,
) -> tuple[Optional[torch.Tensor], torch.Tensor, Metrics]:
    """IS weights, rejection mask and metrics (verl's ``compute_rollout_correction_and_rejection_mask``).

    Inputs (B, T): log pi_old, log pi_rollout of the sampled tokens, and the response mask. Returns
    (detached weights (B, T), 0 on padding, or None when ``rollout_is`` is None; the response mask with
    rejected tokens set to 0, same dtype; metrics: IS, RS and ``rollout_mismatch_metrics``, unprefixed).
    The caller multiplies each token's policy loss by the weight and aggregates under the new mask.
    """
    mask = _check_inputs(old_logprobs, rollout_logprobs, response_mask)
    log_ratio = _zero_padding(old_logprobs, mask) - _zero_padding(rollout_logprobs, mask)
    weights: Optional[torch.Tensor] = None
    metrics: Metrics = {}
    if rollout_is is not None:
        if rollout_is_threshold is None:
            raise ValueError("rollout_is is set but rollout_is_threshold is None: give e.g. 2.0 or '0.5_2.0'")
        weights, metrics = importance_weights(
            log_ratio, mask, rollout_is, rollout_is_threshold, rollout_is_batch_normalize
        )
    new_mask = response_mask.clone()
    if rollout_rs is not None:
        if rollout_rs_threshold is None:
            raise ValueError(f"rollout_rs={rollout_rs!r} needs rollout_rs_threshold (e.g. 2.0; '0.5_2.0' for k1 modes)")
        keep, rs_metrics = rejection_mask(log_ratio, mask, rollout_rs, rollout_rs_threshold)
        new_mask = response_mask * keep.to(response_mask.dtype)
        metrics.update(rs_metrics)
    metrics.update(rollout_mismatch_metrics(old_logprobs, rollout_logprobs, response_mask))
    return weights, new_mask, metrics


def _check_inputs(
    old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """The response mask as a float tensor of the log-probs' dtype, after checking shapes and emptiness."""
    if old_logprobs.shape != rollout_logprobs.shape or old_logprobs.shape != response_mask.shape:
        raise ValueError(
            f"shapes differ: old_logprobs {tuple(old_logprobs.shape)}, rollout_logprobs "
            f"{tuple(rollout_logprobs.shape)}, response_mask {tuple(response_mask.shape)}; all must be (B, T)"
        )
    if old_logprobs.dim() != 2 or not response_mask.bool().any():
        raise ValueError("expected (B, T) inputs and a response_mask with at least one valid token")
    return response_mask.to(old_logprobs.dtype)


def _zero_padding(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Detached log-probs, 0 outside the mask (so NaN or -inf padding cannot leak into sums)."""
    return torch.where(mask.bool(), logprobs.detach(), torch.zeros_like(logprobs))
