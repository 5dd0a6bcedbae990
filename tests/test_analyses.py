"""Kept samples (round trip, torn lines) and response perplexity on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eval.perplexity import response_perplexities
from eval.samples import SampleSet, append_samples, read_samples, samples_path


def test_samples_round_trip_torn_line_and_later_wins(tmp_path):
    path = samples_path(tmp_path / "records_t_n4_abc.jsonl")
    assert path.name == "samples_t_n4_abc.jsonl"
    long_text = "7+6=13," * 5000  # one line far longer than the tail the appender reads at a time
    sets = [SampleSet("base", "p1", "h1", ("1+1=2#2", long_text), (True, False)),
            SampleSet("step_000010", "p1", "h1", ("#3",), (False,))]  # fmt: skip
    append_samples(path, sets)
    assert read_samples(path) == sets
    with path.open("a") as f:
        f.write('{"model": "base", "problem_id": "p2", "problem_hash": "h2", "z": "eJzL')  # killed mid-write
    with pytest.warns(UserWarning, match="skipping a truncated last line"):
        assert read_samples(path) == sets
    again = SampleSet("base", "p1", "h9", ("x",), (False,))
    with pytest.warns(UserWarning, match="dropping a truncated last line"):
        append_samples(path, [again])
    assert read_samples(path) == [again, sets[1]]  # the later line wins, in first-seen order
    with pytest.raises(ValueError, match="completions but"):
        SampleSet("base", "p1", "h", ("a", "b"), (True,))


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tiny_model, tiny_tokenizer):
    """Zero the final norm: every hidden state is 0, so are the logits, and every next token has
    probability 1/V: the perplexity of any response is exactly V."""
    with torch.no_grad():
        tiny_model.model.norm.weight.zero_()
    values = response_perplexities(tiny_model, tiny_tokenizer, ["12+3=", "4+5="], ["2+3=5,1+0=1#15", "9"])
    assert values == pytest.approx([len(tiny_tokenizer)] * 2, rel=1e-5)


def test_perplexity_batched_with_padding_equals_one_at_a_time(tiny_model, tiny_tokenizer):
    prompts = ["12+3=", "4+5=", "123+456=", "1+1="]
    responses = ["2+3=5,1+0=1#15", "9", "3+6=9,2+5=7,1+4=5#579", ""]
    together = response_perplexities(tiny_model, tiny_tokenizer, prompts, responses, batch_size=4)
    alone = [response_perplexities(tiny_model, tiny_tokenizer, [p], [r], batch_size=1)[0] for p, r in zip(prompts, responses)]
    assert np.isnan(together[3]) and np.isnan(alone[3])  # an empty response has no tokens to score
    assert together[:3] == pytest.approx(alone[:3], rel=1e-5)
    # by hand for one response: exp of the mean negative log-likelihood of its tokens after the prompt
    ids = tiny_tokenizer("4+5=").input_ids + tiny_tokenizer("9", add_special_tokens=False).input_ids
    with torch.no_grad():
        logprobs = torch.log_softmax(tiny_model(torch.tensor([ids])).logits[0, :-1].double(), -1)
    nll = -logprobs[len(ids) - 2, ids[-1]].item()
    assert together[1] == pytest.approx(math.exp(nll), rel=1e-5)


def test_perplexity_figure_with_nothing_to_score(tmp_path):
    """A model whose kept responses are all empty (it ends at once) still gets a figure, saying so."""
    from eval.figures import plot_perplexity

    empty = {"count": 0, "values": []}
    png = plot_perplexity({"base": {"under_base": empty, "under_self": empty}}, tmp_path / "perplexity.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
