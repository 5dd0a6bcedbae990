"""The built-in arithmetic task: splits, the noisy teacher, the verifier, the tokenizer."""

from __future__ import annotations

import random
import statistics

import pytest

from train.base_model import build_tokenizer
from train.config import TaskConfig
from train.rewards import REWARDS
from train.rewards.arithmetic import extract_answer
from train.tasks import load_task
from train.tasks.arithmetic import ALPHABET, MARKER, STEP_SEP, correct_rate, make_problem, teacher_trace

SMALL = TaskConfig(train_size=3000, test_size=300)
reward = REWARDS["arithmetic"]


def _score(problems, traces) -> list[float]:
    return reward([p.prompt for p in problems], traces, answer=[p.answer for p in problems])


def _replay(trace: str) -> str:
    """The answer the trace's own written steps imply (checks that a slip propagates)."""
    steps, answer = trace.split(MARKER)
    digits, carry = [], 0
    for step in steps.split(STEP_SEP):
        lhs, total = step.split("=")
        assert (lhs.count("+") == 2) == bool(carry), f"carry not followed in {trace!r}"  # x+y+1 carries
        digits.append(int(total) % 10)
        carry = int(total) // 10
    return ("1" if carry else "") + "".join(str(d) for d in reversed(digits))


def test_splits_are_deterministic_sized_and_disjoint():
    train, test = load_task(SMALL, "train"), load_task(SMALL, "test")
    assert [p.id for p in train] == [p.id for p in load_task(SMALL, "train")]
    assert [p.id for p in test] == [p.id for p in load_task(SMALL, "test")]
    assert (len(train), len(test)) == (SMALL.train_size, SMALL.test_size)
    assert len({p.id for p in train}) == len(train) and len({p.id for p in test}) == len(test)
    unordered = lambda ps: {frozenset((p.metadata["a"], p.metadata["b"])) for p in ps}  # noqa: E731
    assert not unordered(train) & unordered(test)  # not even b+a of a test problem is in train
    other_seed = load_task(TaskConfig(train_size=3000, test_size=300, seed=SMALL.seed + 1), "test")
    assert [p.id for p in other_seed] != [p.id for p in test]


def test_one_split_does_not_depend_on_the_other_splits_size():
    bigger_train = TaskConfig(train_size=4000, test_size=300)
    assert [p.id for p in load_task(bigger_train, "test")] == [p.id for p in load_task(SMALL, "test")]


def test_problems_have_the_configured_operand_lengths_and_right_answers():
    cfg = TaskConfig(train_size=500, test_size=50, min_digits=3, max_digits=5)
    for p in load_task(cfg, "train"):
        a, b = p.metadata["a"], p.metadata["b"]
        assert 3 <= len(str(a)) <= 5 and 3 <= len(str(b)) <= 5
        assert p.prompt == f"{a}+{b}=" and p.answer == str(a + b)


def test_unknown_task_or_split_lists_the_known_ones():
    with pytest.raises(ValueError, match="known loaders: arithmetic, dataset"):
        load_task(TaskConfig(loader="gsm8k"), "train")
    with pytest.raises(ValueError, match="known splits: train, test"):
        load_task(SMALL, "validation")


def test_noise_free_teacher_is_always_right():
    problems = load_task(TaskConfig(train_size=2000, test_size=10, slip_rate=0.0), "train")
    rng = random.Random(0)
    traces = [teacher_trace(p, rng) for p in problems]
    assert _score(problems, traces) == [1.0] * len(problems)
    assert all(_replay(t) == p.answer for p, t in zip(problems, traces))


@pytest.mark.parametrize("concentration", [2.0, 1000.0])
def test_noisy_teacher_is_right_at_the_expected_rate_and_slips_propagate(concentration):
    cfg = TaskConfig(train_size=4000, test_size=10, slip_rate=0.3, slip_concentration=concentration)
    problems = load_task(cfg, "train")
    rng = random.Random(1)
    traces = [teacher_trace(p, rng) for p in problems]
    scores = _score(problems, traces)
    expected = statistics.mean(correct_rate(p) for p in problems)
    # 4000 Bernoulli draws: standard error under 0.008, so 0.03 is ~4 sigma.
    assert abs(statistics.mean(scores) - expected) < 0.03
    clean = load_task(TaskConfig(train_size=4000, test_size=10, slip_rate=0.0), "train")
    for p, q, trace, score in zip(problems, clean, traces, scores):
        assert _replay(trace) == trace.split(MARKER)[1]  # every step follows what was written
        slipped = trace != teacher_trace(q, rng)
        assert score == (0.0 if slipped else 1.0)  # a slip always ends in a wrong answer


def test_slips_are_tied_to_facts_so_problems_differ_in_difficulty():
    problems = load_task(SMALL, "test")
    rates = [correct_rate(p) for p in problems]
    assert min(rates) < 0.05 and max(rates) > 0.7  # hard and easy problems, not one shared rate
    uniform = load_task(TaskConfig(train_size=3000, test_size=300, slip_concentration=1e4), "test")
    spread = [correct_rate(p) for p in uniform if len(str(max(p.metadata["a"], p.metadata["b"]))) == 3]
    assert max(spread) - min(spread) < 0.1  # high concentration: every fact slips at ~slip_rate


@pytest.mark.parametrize(
    "completion, score",
    [
        ("7+6=13,4+8+1=13,0+5+1=6#633", 1.0),  # correct
        ("#633", 1.0),  # only the answer counts, not the steps
        ("7+6=13,4+8+1=13,0+5+1=6#634", 0.0),  # wrong
        ("7+6=13,4+8+1=13,0+5+1=6 633", 0.0),  # missing marker
        ("633", 0.0),
        ("", 0.0),
        ("#633,1+2=3", 0.0),  # garbage after the answer
        ("#633#", 0.0),  # empty final answer
        ("#633x", 0.0),
        ("#0633", 0.0),  # leading zero: strict string match
        ("#63 3", 0.0),
        ("#633<eos>", 0.0),  # special tokens must be stripped by decoding
        ("#1#633", 1.0),  # the last marker counts
        ("#633\n", 1.0),  # surrounding whitespace is ignored
    ],
)
def test_verifier_hand_cases(completion, score):
    assert reward(["47+586="], [completion], answer=["633"]) == [score]


def test_verifier_extracts_and_checks_lengths():
    assert extract_answer("1+2=3#3") == "3" and extract_answer("no marker") is None
    with pytest.raises(ValueError, match="differ in length"):
        reward(["1+2="], ["#3", "#3"], answer=["3"])


def test_tokenizer_round_trips_traces_exactly_one_token_per_character():
    tok = build_tokenizer(ALPHABET)
    rng = random.Random(0)
    texts = [p.prompt + teacher_trace(p, rng) for p in load_task(SMALL, "test")]
    texts += [make_problem(0, 0).prompt, "9999+9999=" + teacher_trace(make_problem(9999, 9999), rng)]
    for text in texts:
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1  # <bos> + one per character
        assert tok.decode(ids, skip_special_tokens=True) == text  # Fuse decoder: no spaces inserted
    batch = tok(texts[:8], add_special_tokens=False).input_ids
    assert tok.batch_decode(batch) == texts[:8]
    assert " " not in tok.decode(tok("12+34=").input_ids, skip_special_tokens=True)
    assert tok.convert_ids_to_tokens(tok("1+2", add_special_tokens=False).input_ids) == ["1", "+", "2"]
