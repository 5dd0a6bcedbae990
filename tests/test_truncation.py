"""Numbers: the trainer's top-k / top-p cut equals transformers' warpers (vLLM's in tests/test_vllm_engine.py)."""

from __future__ import annotations

import pytest
import torch
from transformers import TopKLogitsWarper, TopPLogitsWarper

from algorithms.truncation import truncated_logprobs, truncation_mask


def hf_cut(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """What ``generate`` samples from: its TopK then TopP warpers (its order), as a keep-mask."""
    scores = logits.clone()
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.isfinite(scores)


@pytest.mark.parametrize("top_k,top_p", [(0, 0.9), (5, 1.0), (5, 0.9), (0, 0.5), (50, 0.95), (0, 1.0)])
def test_the_cut_is_transformers_cut(top_k, top_p):
    gen = torch.Generator().manual_seed(top_k + int(100 * top_p))
    logits = torch.randn(64, 101, generator=gen) * 3
    logits[0] = 0.0  # all tied: top-k keeps every tie, top-p keeps a share of them
    logits[1, 7] = 40.0  # one token holds all the mass
    ours = truncation_mask(logits, top_k, top_p)
    torch.testing.assert_close(ours, hf_cut(logits, top_k, top_p))
    assert ours.any(-1).all()


def test_logprobs_are_the_renormalised_cut_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    tokens = torch.tensor([1])
    # top-k 2 keeps tokens 0 and 1: log(e^1 / (e^2 + e^1))
    expected = 1.0 - torch.logsumexp(torch.tensor([2.0, 1.0]), 0)
    torch.testing.assert_close(truncated_logprobs(logits, tokens, top_k=2), expected.reshape(1))
    # no cut: the plain log-softmax
    torch.testing.assert_close(truncated_logprobs(logits, tokens), torch.log_softmax(logits, -1)[:, 1])


def test_a_sampled_token_outside_the_cut_keeps_a_finite_logprob():
    logits = torch.tensor([[5.0, 4.0, -3.0]])
    got = truncated_logprobs(logits, torch.tensor([2]), top_k=1)  # token 2 is outside top-1
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, torch.log_softmax(torch.tensor([[5.0, -3.0]]), -1)[:, 1])


def test_gradients_reach_the_kept_logits_only():
    logits = torch.tensor([[3.0, 2.0, -4.0, -5.0]], requires_grad=True)
    truncated_logprobs(logits, torch.tensor([0]), top_k=2).sum().backward()
    assert (logits.grad[0, 2:] == 0).all() and (logits.grad[0, :2] != 0).all()
