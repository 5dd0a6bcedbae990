"""The built-in task: multi-digit addition with a column-by-column trace, and a noisy teacher.

Format (plain text, no chat template). The prompt is ``"47+586="``; the completion is one step per
column, right to left, then the answer marker and the answer::

    7+6=13,4+8+1=13,0+5+1=6#633

A step reads ``x+y=s`` for digits x, y of the column (the shorter operand padded with 0) and
writes ``x+y+1=s`` when a carry comes in; the answer is the last digit of each step's sum, read
back left to right, with a leading 1 when the last step carries.

The teacher. ``teacher_trace`` writes this trace but slips: a step may write a wrong sum (one off,
in a direction fixed per fact), and the rest of the trace follows the written sum faithfully, so
the answer is wrong. How likely a slip is depends on the *fact* the step uses, the triple
(x, y, carry in): each of the 200 facts gets its own slip probability, drawn once per task seed
from a Beta distribution with mean ``slip_rate`` and concentration ``slip_concentration``.

Why facts and not samples: in a prior trial, a base model SFT'd on traces whose slips were
independent per sample failed every problem at about the same rate, so its pass@k reached 1.0 on
all problems by k = 16 and left no reasoning boundary to study. Tied to facts, slips make some
problems (those using facts the teacher mostly gets wrong) hard, while most stay within reach.
Facts, unlike a hash of the whole problem, are visible (the model writes x, y and the carry just
before the sum), so a model learns each fact's slip rate from train problems and the hardness
carries over to unseen test problems. Temperature 0.6 sharpens these rates: facts slipping less
than half the time become nearly safe, and a fact slipping more than ~85% of the time leaves its
right sum under top-p 0.95's cut, so problems using it are out of the base model's reach at
evaluation (though not at temperature 1.0, where training samples).

Splits. Problems come from one stream seeded by ``cfg.seed``; a hash of the unordered operand
pair sends each to train or test, so the splits are disjoint (a+b and b+a share a split) and each
split is a prefix of its own sub-stream: changing one split's size leaves the other unchanged.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import TYPE_CHECKING, Iterator

from train.tasks import Problem

if TYPE_CHECKING:
    from train.config import TaskConfig

MARKER = "#"  # precedes the final answer; the verifier reads what follows the last one
STEP_SEP = ","  # between column steps
ALPHABET = "0123456789+=" + STEP_SEP + MARKER  # every character prompts and traces use
TEST_SHARE = 0.1  # share of the problem stream hashed to the test split
MAX_SUM = 19  # 9 + 9 + carry: the largest column sum

Fact = tuple[int, int, int]  # (digit x, digit y, carry in)
Slip = tuple[float, int]  # (probability the teacher writes the wrong sum, the wrong sum it writes)


def load(cfg: TaskConfig, split: str) -> list[Problem]:
    """The ``split`` ("train" or "test") of the arithmetic task, deterministic from ``cfg``.

    >>> from train.config import TaskConfig
    >>> cfg = TaskConfig(test_size=3, train_size=5, min_digits=2, max_digits=3)
    >>> [p.prompt for p in load(cfg, "test")] == [p.prompt for p in load(cfg, "test")]
    True
    >>> p = load(cfg, "test")[0]
    >>> p.prompt[-1], str(eval(p.prompt[:-1])) == p.answer
    ('=', True)
    """
    _check(cfg)
    size = {"train": cfg.train_size, "test": cfg.test_size}[split]
    slips = slip_table(cfg)
    problems: list[Problem] = []
    seen: set[tuple[int, int]] = set()
    for a, b in _operand_stream(cfg):
        if len(problems) == size:
            break
        if (a, b) in seen or _split_of(a, b, cfg.seed) != split:
            continue
        seen.add((a, b))
        problems.append(make_problem(a, b, slips))
    return problems


def make_problem(a: int, b: int, slips: dict[Fact, Slip] | None = None) -> Problem:
    """The problem ``a+b=``; ``metadata`` holds the operands and the teacher's slip table.

    >>> p = make_problem(47, 586)
    >>> p.id, p.prompt, p.answer, p.metadata["slips"]
    ('add-47+586', '47+586=', '633', {})
    """
    return Problem(
        id=f"add-{a}+{b}",
        prompt=f"{a}+{b}=",
        answer=str(a + b),
        # One table shared by every problem of a task (no copy): slips belong to facts, not problems.
        metadata={"a": a, "b": b, "slips": {} if slips is None else slips},
    )


def teacher_trace(problem: Problem, rng: random.Random) -> str:
    """A step-by-step trace of ``problem`` in which each step may slip, as its fact says.

    The slip probability and the wrong sum belong to the fact the step writes, (x, y, carry in),
    also after an earlier slip changed the carry: the teacher is a function of what is visible, so
    a model can learn it exactly. Later steps carry from what was written, so the answer follows
    the slip and is wrong (a slip moves the result by 10^column, and no later slip undoes that).
    With no slips the trace is correct:

    >>> teacher_trace(make_problem(47, 586), random.Random(0))
    '7+6=13,4+8+1=13,0+5+1=6#633'
    >>> teacher_trace(make_problem(99, 1), random.Random(0))
    '9+1=10,9+0+1=10#100'
    >>> always = {fact: (1.0, _wrong_sum(fact, +1)) for fact in _all_facts()}
    >>> teacher_trace(make_problem(47, 586, always), random.Random(0))
    '7+6=14,4+8+1=14,0+5+1=7#744'
    """
    a, b = problem.metadata["a"], problem.metadata["b"]
    slips: dict[Fact, Slip] = problem.metadata["slips"]
    steps: list[str] = []
    digits: list[str] = []
    carry = 0
    for i in range(max(len(str(a)), len(str(b)))):
        x, y = _digit(a, i), _digit(b, i)
        total = x + y + carry
        p_slip, wrong = slips.get((x, y, carry), (0.0, total))
        if p_slip > 0 and rng.random() < p_slip:
            total = wrong
        steps.append(f"{x}+{y}+1={total}" if carry else f"{x}+{y}={total}")
        digits.append(str(total % 10))
        carry = total // 10
    answer = ("1" if carry else "") + "".join(reversed(digits))
    return STEP_SEP.join(steps) + MARKER + answer


def noise_free_trace(problem: Problem, rng: random.Random) -> str:
    """The teacher's trace without slips: always right (the task's stronger teacher, for distillation).

    >>> always = {fact: (1.0, _wrong_sum(fact, +1)) for fact in _all_facts()}
    >>> noise_free_trace(make_problem(47, 586, always), random.Random(0))
    '7+6=13,4+8+1=13,0+5+1=6#633'
    """
    return teacher_trace(make_problem(problem.metadata["a"], problem.metadata["b"]), rng)


def correct_rate(problem: Problem) -> float:
    """Chance that ``teacher_trace`` ends in the right answer: no step of the right path slips.

    >>> correct_rate(make_problem(12, 34))
    1.0
    >>> half = {fact: (0.5, _wrong_sum(fact, +1)) for fact in _all_facts()}
    >>> correct_rate(make_problem(12, 345, half))
    0.125
    """
    slips: dict[Fact, Slip] = problem.metadata["slips"]
    a, b = problem.metadata["a"], problem.metadata["b"]
    return math.prod(1.0 - slips.get(fact, (0.0, 0))[0] for fact in _facts(a, b))


def slip_table(cfg: TaskConfig) -> dict[Fact, Slip]:
    """Each fact's slip probability (Beta, mean ``slip_rate``) and its wrong sum, from ``cfg.seed``.

    >>> from train.config import TaskConfig
    >>> table = slip_table(TaskConfig(slip_rate=0.3, slip_concentration=2.0))
    >>> len(table), abs(sum(p for p, _ in table.values()) / len(table) - 0.3) < 0.08
    (200, True)
    >>> set(p for p, _ in slip_table(TaskConfig(slip_rate=0.0)).values())
    {0.0}
    """
    # Two generators: the wrong sums of one seed stay the same whatever the rate and concentration
    # (the Beta sampler uses a varying number of draws).
    rate_rng = random.Random(f"arithmetic-slip-rates/{cfg.seed}")
    direction_rng = random.Random(f"arithmetic-slip-directions/{cfg.seed}")
    mean, kappa = cfg.slip_rate, cfg.slip_concentration
    table: dict[Fact, Slip] = {}
    for fact in _all_facts():
        rate = rate_rng.betavariate(mean * kappa, (1 - mean) * kappa) if 0 < mean < 1 else mean
        table[fact] = (float(rate), _wrong_sum(fact, direction_rng.choice((-1, 1))))
    return table


def _check(cfg: TaskConfig) -> None:
    """Raise ValueError saying how to fix a task config this module cannot generate."""
    if not 1 <= cfg.min_digits <= cfg.max_digits:
        raise ValueError(
            f"task.min_digits={cfg.min_digits}, task.max_digits={cfg.max_digits}: need 1 <= min_digits <= max_digits"
        )
    if not 0.0 <= cfg.slip_rate <= 1.0 or cfg.slip_concentration <= 0:
        raise ValueError(
            f"task.slip_rate={cfg.slip_rate} must lie in [0, 1] and "
            f"task.slip_concentration={cfg.slip_concentration} must be > 0"
        )
    pairs = sum(_count(d) for d in range(cfg.min_digits, cfg.max_digits + 1)) ** 2
    # Hashing sends about TEST_SHARE of pairs to test; ask for well under what exists, or the stream
    # would search for problems that are not there.
    if cfg.test_size > 0.5 * TEST_SHARE * pairs or cfg.train_size > 0.5 * (1 - TEST_SHARE) * pairs:
        raise ValueError(
            f"task.train_size={cfg.train_size} / task.test_size={cfg.test_size} ask for too many of the "
            f"{pairs} problems with {cfg.min_digits}..{cfg.max_digits} digits; raise task.max_digits or lower the sizes"
        )


def _operand_stream(cfg: TaskConfig) -> Iterator[tuple[int, int]]:
    """Endless operand pairs: each operand's length uniform in [min, max] digits, then the value."""
    rng = random.Random(f"arithmetic-problems/{cfg.seed}")
    while True:
        a, b = (_number(rng, rng.randint(cfg.min_digits, cfg.max_digits)) for _ in range(2))
        yield a, b


def _number(rng: random.Random, digits: int) -> int:
    """A uniform number with exactly ``digits`` digits (0..9 for one digit)."""
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def _count(digits: int) -> int:
    """How many numbers have exactly ``digits`` digits."""
    return 10 if digits == 1 else 9 * 10 ** (digits - 1)


def _split_of(a: int, b: int, seed: int) -> str:
    """"test" for about TEST_SHARE of operand pairs, else "train"; a+b and b+a agree."""
    key = f"{seed}:{min(a, b)}+{max(a, b)}".encode()
    bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
    return "test" if bucket < TEST_SHARE else "train"


def _digit(n: int, i: int) -> int:
    """The ``i``-th digit of ``n`` from the right (0 beyond its length)."""
    return n // 10**i % 10


def _facts(a: int, b: int) -> list[Fact]:
    """The (x, y, carry in) fact each column of the correct computation of a + b uses."""
    facts, carry = [], 0
    for i in range(max(len(str(a)), len(str(b)))):
        x, y = _digit(a, i), _digit(b, i)
        facts.append((x, y, carry))
        carry = (x + y + carry) // 10
    return facts


def _all_facts() -> list[Fact]:
    """All 200 facts in a fixed order."""
    return [(x, y, c) for x in range(10) for y in range(10) for c in (0, 1)]


def _wrong_sum(fact: Fact, direction: int) -> int:
    """The sum one off the true one in ``direction``, turned around at 1 and MAX_SUM.

    Never 0, so a slip in the top column cannot give the answer a leading zero.

    >>> _wrong_sum((0, 1, 0), -1), _wrong_sum((9, 9, 1), +1), _wrong_sum((3, 4, 1), -1)
    (2, 18, 7)
    """
    total = sum(fact)
    wrong = total + direction
    return wrong if 1 <= wrong <= MAX_SUM else total - direction
