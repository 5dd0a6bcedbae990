"""The built-in task where RL narrows the reasoning boundary: addition by two routes, one with a blind spot.

Format. The prompt is ``"47+586="``, as in the arithmetic task. A completion opens with a route
letter, then writes one step per column and ends with ``#`` and the answer (the arithmetic task's
verifier reads it). Two routes:

- Route R (right to left, the schoolbook): each carry comes from the step before, so the method is
  always right: ``R7+6=13,4+8+1=13,0+5+1=6#633``.
- Route L (left to right): the top column first, and each column's carry guessed from the digits of
  the next lower column alone (1 when they sum to 10 or more): ``L0+5+1=6,4+8+1=13,7+6=13#633``. The
  answer is each step's last digit, left to right, after a 1 when the top step's sum reaches 10.
  The guess is wrong exactly when the lower column's digits sum to 9 and a carry comes into it (the
  carry passes through a 9): on those problems, **class H**, route L is always wrong.

Class H: a column below the top one has digits summing to 9 and receives a carry; none with fewer
than 3 columns. With the preset's 3-digit operands (``conf/task/routes.yaml``), 4.5% of problems
(the middle column sums to 9, the bottom one to 10 or more).

The weak teacher (``teacher_trace``; the built-in base model is SFT'd on its traces):
- picks route R with probability ``task.route_r_share`` (0.25), else L, whatever the problem: it
  does not tell H problems apart;
- route L slips per fact, as the arithmetic teacher does: each fact (x, y, guessed carry) has its own
  slip probability, drawn once per task seed (Beta, mean ``task.slip_rate``, concentration
  ``task.slip_concentration``), and a slip writes the sum minus one (a sum of 0 does not slip);
- route R slips at every step with probability ``task.route_r_slip`` (0.35) whatever the fact, also
  writing the sum minus one; later carries follow the written sum;
- the knowledge gap: it never writes the total ``task.gap_total`` (14); where it would (after any
  slip), it writes ``task.gap_written`` (9) instead, losing the carry too. Problems whose correct
  computation holds a column total of 14 (tag ``gap: yes``, about a sixth of them) are out of its
  reach by either route.

Every change a teacher makes to a total moves it down, never back up to the truth, and changes the
column's last digit, so each statement above is exact: route L is right on no H problem, and
otherwise exactly when no written total differs from the true one (``teacher_correct_rate``).
(Writing 15 for the gap, or turning a slip of 0 up to 1, would let route L land on the true total of
a column whose carry it missed.)

The strong teacher (``strong_teacher_trace``, what ``algorithm=distill`` learns from) is the weak one
without the gap: the same routes, shares and slips, but it writes 14. It knows nothing more: route L
keeps its blind spot and every slip stays.

The base's SFT traces (``sft_problems``) cycle through the train split with class H repeated to a
share ``task.sft_h_share`` (0.3): at the natural share, a base trained as long as the budget allows
learnt route L's guess loosely on 9-columns and wrote the true carry there on ~10% of H problems,
a leak RL then amplified (it solved H by route L). The base check (``base_check``) holds the built
base to its teacher: route shares, route L's accuracy on H (teacher: 0), answers that follow their
trace, no 14 written.

Why RL narrows the boundary here (Yue et al. 2025, arXiv 2504.13837). On the ~95% of training
problems outside H, route L is right unless a fact slips; its slips belong to facts, which RL can
sharpen away, while route R slips at 35% a step and pays less. Only on H problems does R pay more,
and they are too rare to hold it up while the policy cannot tell them from the rest, so RL moves the
route choice onto L for every problem. The base, which samples R a quarter of the time, solves H
problems at large k; the RL policy, having pruned R, does not. Both halves are measured per training
step by ``diagnostics`` (``train/route_R_share``, ``train/accuracy_H``, ``train/route_L_accuracy_H``,
...). Pruning R is what RL does first, not a wall: with enough steps it can learn to write the true
carry in route L (in three runs of the default study, route L's training accuracy on H was at most
0.02 over steps 1-100 and 0.17, 0.19 and 0.04 over steps 151-200), which
``train/route_L_accuracy_H`` shows when it happens.

Why distillation widens it: gap problems are out of the base's reach at the evaluation's sampling
settings, and the strong teacher's traces write 14. Why 9 for 14 and not 13 or 15: a policy that
writes 13 is one token from 14, and GRPO found it within 200 steps in a trial run (the gap problems'
training accuracy rose from 0 to ~0.9); from 9 it takes two ("1", then "4"). RL samples at
temperature 1 and can still stumble on it: in three runs of the default study, GRPO did not in 200
steps from the default base, and did from the bases of seeds 1 and 2 (gap problems' training
accuracy ~0.5 over steps 151-200; ``train/writes_gap_total`` shows 14 being written).

Splits. Problems come from one operand stream (each operand's length uniform in
[``task.min_digits``, ``task.max_digits``]), and a hash of the unordered operand pair sends each to
train or test, as in the arithmetic task, so the splits are disjoint. The train split is the
stream as it comes (the natural H share). The test split is stratified, a stated shift: a share
``task.test_h_share`` (0.5) of it is class H, interleaved so that every prefix holds that share,
because at the natural 4.5% the 100 problems a sweep affords would hold about 4 H problems, too few
to measure coverage on them. The paper, too, evaluates on benchmarks rather than on the RL training
distribution. Each problem carries ``metadata["tags"]`` = {"class": "H" | "rest", "gap": "yes" |
"no"}, so results can be reported per class and reweighted to the natural mixture.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from train.tasks import Problem
from train.tasks.arithmetic import ALPHABET as DIGITS_ALPHABET
from train.tasks.arithmetic import MARKER, STEP_SEP
# The operand stream and the split rule are the arithmetic task's, so both tasks draw problems alike.
from train.tasks.arithmetic import _count, _digit, _operand_stream, _split_of

if TYPE_CHECKING:
    from train.config import TaskConfig

ROUTE_R, ROUTE_L = "R", "L"  # the first character of a completion names its route
ALPHABET = DIGITS_ALPHABET + ROUTE_R + ROUTE_L
MIN_H_COLUMNS = 3  # class H needs a column below the top one that itself receives a carry
# The base check: this many train problems per class, sampled this many times each at temperature 1.
CHECK_PROBLEMS_PER_CLASS = 48
CHECK_SAMPLES = 16

Fact = tuple[int, int, int]  # (digit x, digit y, carry in: true for route R, guessed for route L)
Writer = Callable[[Fact], int]  # the total a teacher writes for a fact


@dataclass(frozen=True)
class RouteTeacher:
    """The teachers' settings, shared by every problem of a task (one object, not a copy per problem)."""

    r_share: float  # chance of route R
    r_slip: float  # route R: slip chance per step
    l_slips: dict[Fact, float] = field(repr=False)  # route L: slip chance per fact
    gap_total: Optional[int]  # the total the weak teacher never writes; None = no gap
    gap_written: int = 9  # what it writes instead (below gap_total)


def load(cfg: TaskConfig, split: str) -> list[Problem]:
    """The ``split`` ("train" or "test") of the routes task, deterministic from ``cfg``.

    >>> from train.config import TaskConfig
    >>> cfg = TaskConfig(name="routes", loader="routes", min_digits=3, max_digits=4, train_size=50, test_size=10)
    >>> test = load(cfg, "test")
    >>> [p.metadata["tags"]["class"] for p in test[:4]], test[0].prompt[-1]
    (['rest', 'H', 'rest', 'H'], '=')
    """
    _check(cfg)
    teacher = route_teacher(cfg)
    if split == "train":
        return _take(_stream(cfg, "train", teacher), cfg.train_size)
    return _stratified(_stream(cfg, "test", teacher), cfg.test_size, cfg.test_h_share)


def sft_problems(cfg: TaskConfig) -> list[Problem]:
    """The problems the base model's SFT traces cycle through: the train split, class H repeated to a share
    ``cfg.sft_h_share`` (every prefix holds it), the rest once each.

    >>> from train.config import TaskConfig
    >>> cfg = TaskConfig(name="routes", loader="routes", min_digits=3, max_digits=4, train_size=400, sft_h_share=0.5)
    >>> picked = sft_problems(cfg)
    >>> rest = [p for p in load(cfg, "train") if p.metadata["tags"]["class"] == "rest"]
    >>> len(picked) == 2 * len(rest), sum(p.metadata["tags"]["class"] == "H" for p in picked[:100])
    (True, 50)
    """
    train = load(cfg, "train")
    h = [p for p in train if p.metadata["tags"]["class"] == "H"]
    rest = [p for p in train if p.metadata["tags"]["class"] == "rest"]
    if not h or cfg.sft_h_share <= len(h) / len(train):
        return train
    size = round(len(rest) / (1 - cfg.sft_h_share))
    wanted = _class_pattern(size, cfg.sft_h_share)
    cycle = {True: iter(h * (size // len(h) + 1)), False: iter(rest)}
    return [next(cycle[w]) for w in wanted]


def make_problem(a: int, b: int, teacher: RouteTeacher | None = None) -> Problem:
    """The problem ``a+b=`` with its tags; ``metadata["teacher"]`` holds the teachers' settings.

    >>> p = make_problem(47, 586)
    >>> p.id, p.prompt, p.answer, p.metadata["tags"]
    ('routes-47+586', '47+586=', '633', {'class': 'rest', 'gap': 'no'})
    >>> make_problem(191, 9).metadata["tags"], make_problem(68, 76).metadata["tags"]
    ({'class': 'H', 'gap': 'no'}, {'class': 'rest', 'gap': 'yes'})
    """
    teacher = teacher or RouteTeacher(r_share=0.25, r_slip=0.0, l_slips={}, gap_total=14, gap_written=9)
    tags = {"class": "H" if is_class_h(a, b) else "rest", "gap": "yes" if _has_total(a, b, teacher.gap_total) else "no"}
    return Problem(id=f"routes-{a}+{b}", prompt=f"{a}+{b}=", answer=str(a + b),
                   metadata={"a": a, "b": b, "tags": tags, "teacher": teacher})


def right_to_left(a: int, b: int, write: Writer = sum) -> str:
    """Route R's trace of a + b, each step's total as ``write`` gives it; carries follow what is written.

    >>> right_to_left(47, 586)
    'R7+6=13,4+8+1=13,0+5+1=6#633'
    >>> right_to_left(47, 586, lambda fact: sum(fact) - (fact == (7, 6, 0)))  # the first step slips
    'R7+6=12,4+8+1=13,0+5+1=6#632'
    """
    steps, digits, carry = [], [], 0
    for i in range(_columns(a, b)):
        x, y = _digit(a, i), _digit(b, i)
        total = write((x, y, carry))
        steps.append(_step(x, y, carry, total))
        digits.append(total % 10)
        carry = total // 10
    answer = ("1" if carry else "") + "".join(str(d) for d in reversed(digits))
    return ROUTE_R + STEP_SEP.join(steps) + MARKER + answer


def left_to_right(a: int, b: int, write: Writer = sum) -> str:
    """Route L's trace of a + b: top column first, each carry guessed from the next lower column's digits.

    >>> left_to_right(47, 586)
    'L0+5+1=6,4+8+1=13,7+6=13#633'
    >>> left_to_right(191, 9)  # 1+9 carries into 9+0, which carries on: the guess for 1+0 misses it
    'L1+0=1,9+0+1=10,1+9=10#100'
    """
    steps, totals = [], []
    for i in reversed(range(_columns(a, b))):
        x, y = _digit(a, i), _digit(b, i)
        guess = int(i > 0 and _digit(a, i - 1) + _digit(b, i - 1) >= 10)
        totals.append(write((x, y, guess)))
        steps.append(_step(x, y, guess, totals[-1]))
    answer = ("1" if totals[0] >= 10 else "") + "".join(str(t % 10) for t in totals)
    return ROUTE_L + STEP_SEP.join(steps) + MARKER + answer


def is_class_h(a: int, b: int) -> bool:
    """True when a carry passes through a column whose digits sum to 9, below the top column.

    >>> is_class_h(191, 9), is_class_h(99, 1), is_class_h(1591, 9), is_class_h(1581, 18)
    (True, False, True, False)
    """
    carry = 0
    for i in range(_columns(a, b) - 1):  # the top column's own carry out is computed, not guessed
        x, y = _digit(a, i), _digit(b, i)
        if x + y == 9 and carry:
            return True
        carry = (x + y + carry) // 10
    return False


def teacher_trace(problem: Problem, rng: random.Random) -> str:
    """The weak teacher's trace of ``problem``: a route, slips, and never the gap total.

    >>> never_slips = RouteTeacher(r_share=0.5, r_slip=0.0, l_slips={}, gap_total=14)
    >>> rng = random.Random(0)
    >>> sorted({teacher_trace(make_problem(47, 586, never_slips), rng) for _ in range(20)})
    ['L0+5+1=6,4+8+1=13,7+6=13#633', 'R7+6=13,4+8+1=13,0+5+1=6#633']
    >>> sorted({teacher_trace(make_problem(68, 76, never_slips), rng) for _ in range(20)})  # 8+6 = 6+7+1 = 14
    ['L6+7+1=9,8+6=9#99', 'R8+6=9,6+7=13#139']
    """
    return _trace(problem, rng, knows_gap=False)


def strong_teacher_trace(problem: Problem, rng: random.Random) -> str:
    """The strong teacher's trace: the weak teacher's routes and slips, but it writes the gap total.

    >>> never_slips = RouteTeacher(r_share=1.0, r_slip=0.0, l_slips={}, gap_total=14)
    >>> strong_teacher_trace(make_problem(68, 76, never_slips), random.Random(0))
    'R8+6=14,6+7+1=14#144'
    """
    return _trace(problem, rng, knows_gap=True)


def _trace(problem: Problem, rng: random.Random, knows_gap: bool) -> str:
    t: RouteTeacher = problem.metadata["teacher"]
    a, b = problem.metadata["a"], problem.metadata["b"]
    gap = None if knows_gap else t.gap_total
    if rng.random() < t.r_share:
        return right_to_left(a, b, lambda fact: written_total(sum(fact), rng.random() < t.r_slip, gap, t.gap_written))
    slips = t.l_slips
    return left_to_right(a, b, lambda fact: written_total(sum(fact), rng.random() < slips.get(fact, 0.0), gap, t.gap_written))


def written_total(total: int, slipped: bool, gap: int | None, gap_written: int = 9) -> int:
    """What a teacher writes for ``total``: one less when it slips (0 cannot), then ``gap_written`` for the gap.

    >>> written_total(13, False, 14), written_total(13, True, 14), written_total(0, True, 14)
    (13, 12, 0)
    >>> written_total(14, False, 14), written_total(15, True, 14), written_total(14, True, 14), written_total(14, False, None)
    (9, 9, 13, 14)
    """
    if slipped and total > 0:
        total -= 1
    return gap_written if total == gap else total


def teacher_correct_rate(problem: Problem, route: str, knows_gap: bool = False) -> float:
    """Chance that the teacher's trace by ``route`` ends in the right answer.

    Route L: zero on class H; otherwise, as for route R, the chance that every step writes its true
    total: no slip (a total of 0 cannot), and no total equal to the gap for the weak teacher. Exact,
    since ``written_total`` only moves totals down and a wrong total always changes the column's digit.

    >>> t = RouteTeacher(r_share=0.25, r_slip=0.5, l_slips={(4, 8, 1): 0.5}, gap_total=14)
    >>> teacher_correct_rate(make_problem(47, 586, t), "R"), teacher_correct_rate(make_problem(47, 586, t), "L")
    (0.125, 0.5)
    >>> teacher_correct_rate(make_problem(191, 9, t), "L"), teacher_correct_rate(make_problem(68, 76, t), "R")
    (0.0, 0.0)
    >>> teacher_correct_rate(make_problem(68, 76, t), "R", knows_gap=True)
    0.25
    """
    t: RouteTeacher = problem.metadata["teacher"]
    a, b = problem.metadata["a"], problem.metadata["b"]
    if route == ROUTE_L and problem.metadata["tags"]["class"] == "H":
        return 0.0
    gap = None if knows_gap else t.gap_total
    facts = _parse(right_to_left(a, b) if route == ROUTE_R else left_to_right(a, b)).facts
    slip = (lambda fact: t.r_slip) if route == ROUTE_R else (lambda fact: t.l_slips.get(fact, 0.0))
    return math.prod(_keeps(sum(fact), slip(fact), gap) for fact in facts)


def _keeps(total: int, slip: float, gap: int | None) -> float:
    """Chance that ``written_total`` writes ``total`` itself."""
    if total == gap:
        return 0.0
    return 1.0 if total == 0 else 1.0 - slip


def route_teacher(cfg: TaskConfig) -> RouteTeacher:
    """The teachers' settings from ``cfg``: route L's per-fact slip chances are drawn from ``cfg.seed``."""
    rng = random.Random(f"routes-slip-rates/{cfg.seed}")
    mean, kappa = cfg.slip_rate, cfg.slip_concentration
    slips = {}
    for fact in [(x, y, c) for x in range(10) for y in range(10) for c in (0, 1)]:
        slips[fact] = float(rng.betavariate(mean * kappa, (1 - mean) * kappa)) if 0 < mean < 1 else float(mean)
    return RouteTeacher(r_share=cfg.route_r_share, r_slip=cfg.route_r_slip, l_slips=slips, gap_total=cfg.gap_total,
                        gap_written=cfg.gap_written)


# ---------------------------------------------------------------------------------------------
# Reading completions: routes, replays, and the per-step diagnostics.


@dataclass(frozen=True)
class ParsedTrace:
    route: str  # ROUTE_R or ROUTE_L
    facts: list[Fact]  # (x, y, carry written) per step, in the order written
    totals: list[int]  # the total written at each step
    answer: str  # the digits after the marker

    def replayed_answer(self) -> str:
        """The answer the written totals imply, by the route's own rule."""
        if self.route == ROUTE_L:
            lead = "1" if self.totals and self.totals[0] >= 10 else ""
            return lead + "".join(str(t % 10) for t in self.totals)
        digits, carry = [], 0
        for total in self.totals:
            digits.append(total % 10)
            carry = total // 10
        return ("1" if carry else "") + "".join(str(d) for d in reversed(digits))


_STEP = re.compile(r"(\d)\+(\d)(\+1)?=(\d+)")
_TRACE = re.compile(rf"([{ROUTE_R}{ROUTE_L}])((?:\d\+\d(?:\+1)?=\d+{STEP_SEP})*\d\+\d(?:\+1)?=\d+){MARKER}(\d+)")


def parse(completion: str) -> ParsedTrace | None:
    """The route trace ``completion`` writes, or None when it is not one (surrounding whitespace aside).

    >>> parse("L0+5+1=6,4+8+1=13,7+6=13#633")
    ParsedTrace(route='L', facts=[(0, 5, 1), (4, 8, 1), (7, 6, 0)], totals=[6, 13, 13], answer='633')
    >>> parse("7+6=13#13") is None, parse("R7+6=13#") is None, parse("R7+6=13#13x") is None
    (True, True, True)
    """
    match = _TRACE.fullmatch(completion.strip())
    if match is None:
        return None
    return _parse(match.group(0))


def _parse(trace: str) -> ParsedTrace:
    route, body = trace[0], trace[1:]
    steps, _, answer = body.partition(MARKER)
    facts, totals = [], []
    for step in steps.split(STEP_SEP):
        x, y, carry, total = _STEP.fullmatch(step).groups()
        facts.append((int(x), int(y), int(bool(carry))))
        totals.append(int(total))
    return ParsedTrace(route, facts, totals, answer)


def diagnostics(problems: Sequence[Problem], completions: Sequence[str]) -> dict[str, list[float | None]]:
    """Per-sample values of the mechanism's metrics (None: the metric does not apply to that sample).

    route_R_share / route_L_share: the completion takes that route (1.0) or not (0.0; malformed: neither);
    accuracy_H / accuracy_rest / accuracy_gap: right answer, on class H / the rest / gap problems;
    route_L_accuracy_H / route_R_accuracy_H: right answer on H problems answered by that route;
    answer_follows_trace: the answer is what the written totals imply (route traces only);
    writes_gap_total: some step writes the gap total (route traces only; the weak teacher never does).

    >>> p, q = make_problem(191, 9), make_problem(47, 586)
    >>> d = diagnostics([p, p, q], ["R1+9=10,9+0+1=10,1+0+1=2#200", "L1+0=1,9+0+1=10,1+9=10#100", "#633"])
    >>> d["route_R_share"], d["accuracy_H"], d["route_L_accuracy_H"], d["answer_follows_trace"]
    ([1.0, 0.0, 0.0], [1.0, 0.0, None], [None, 0.0, None], [1.0, 1.0, None])
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems for {len(completions)} completions")
    out: dict[str, list[float | None]] = {name: [] for name in DIAGNOSTIC_NAMES}
    for problem, completion in zip(problems, completions):
        for name, value in _sample_diagnostics(problem, completion).items():
            out[name].append(value)
    return out


DIAGNOSTIC_NAMES = (
    "route_R_share", "route_L_share", "accuracy_H", "accuracy_rest", "accuracy_gap",
    "route_L_accuracy_H", "route_R_accuracy_H", "answer_follows_trace", "writes_gap_total",
)


def _sample_diagnostics(problem: Problem, completion: str) -> dict[str, float | None]:
    parsed = parse(completion)
    route = parsed.route if parsed else None
    tags = problem.metadata["tags"]
    right = float(_final_answer(completion) == problem.answer)
    on_h = tags["class"] == "H"
    gap = problem.metadata["teacher"].gap_total
    return {
        "route_R_share": float(route == ROUTE_R),
        "route_L_share": float(route == ROUTE_L),
        "accuracy_H": right if on_h else None,
        "accuracy_rest": None if on_h else right,
        "accuracy_gap": right if tags["gap"] == "yes" else None,
        "route_L_accuracy_H": right if on_h and route == ROUTE_L else None,
        "route_R_accuracy_H": right if on_h and route == ROUTE_R else None,
        "answer_follows_trace": float(parsed.replayed_answer() == parsed.answer) if parsed else None,
        "writes_gap_total": float(gap in parsed.totals) if parsed else None,
    }


def _final_answer(completion: str) -> str | None:
    from train.rewards.arithmetic import extract_answer  # late: the rewards package imports the tasks

    return extract_answer(completion)


# ---------------------------------------------------------------------------------------------
# The base check: does the built base model behave like its teacher before RL?


def base_check(cfg: TaskConfig, sample: Callable[[list[str], int], list[list[str]]]) -> dict[str, Any]:
    """The base model's route shares and accuracies on train problems, against its weak teacher's.

    ``sample(prompts, n)`` returns n completions per prompt at temperature 1 (the teacher's own
    distribution). The first CHECK_PROBLEMS_PER_CLASS H and rest problems of the train split are
    sampled CHECK_SAMPLES times each. Failures name what is off: a base that leaks true carries into
    route L (then it solves H without route R), drops route R, or writes answers its trace does not
    imply would make the study measure something other than what RL does to the teacher's routes.
    """
    problems = _check_problems(cfg)
    completions = sample([p.prompt for p in problems], CHECK_SAMPLES)
    flat = [p for p in problems for _ in range(CHECK_SAMPLES)]
    values = diagnostics(flat, [c for group in completions for c in group])
    stats = {name: _mean(v) for name, v in values.items()}
    h = [p for p in problems if p.metadata["tags"]["class"] == "H"]
    expected = {
        "route_R_share": cfg.route_r_share,
        "route_L_accuracy_H": 0.0,
        "route_R_accuracy_H": sum(teacher_correct_rate(p, ROUTE_R) for p in h) / len(h),
        "answer_follows_trace": 1.0,
        "writes_gap_total": 0.0 if cfg.gap_total is not None else float("nan"),
    }
    failures = _check_failures(stats, expected, cfg)
    return {"problems": len(problems), "samples_per_problem": CHECK_SAMPLES, "temperature": 1.0,
            "stats": stats, "teacher": expected, "failures": failures, "passed": not failures}


def _check_failures(stats: dict[str, float], expected: dict[str, float], cfg: TaskConfig) -> list[str]:
    """What is off, with the tolerance each number is held to (sampling noise at 768 samples is ~0.02)."""
    failures = []
    if abs(stats["route_R_share"] - cfg.route_r_share) > 0.1:
        failures.append(f"route R share {stats['route_R_share']:.3f}, teacher {cfg.route_r_share:.3f} (tolerance 0.1)")
    if not stats["route_L_accuracy_H"] <= 0.05:
        failures.append(f"route L solves {stats['route_L_accuracy_H']:.3f} of class H (teacher 0, tolerance 0.05): "
                        "the base computes true carries the teacher never wrote")
    if not stats["route_R_accuracy_H"] >= 0.5 * expected["route_R_accuracy_H"]:
        failures.append(f"route R solves {stats['route_R_accuracy_H']:.3f} of class H, under half the teacher's "
                        f"{expected['route_R_accuracy_H']:.3f}")
    if not stats["answer_follows_trace"] >= 0.95:
        failures.append(f"only {stats['answer_follows_trace']:.3f} of answers follow their trace (teacher 1, tolerance 0.05)")
    if cfg.gap_total is not None and not stats["writes_gap_total"] <= 0.01:
        failures.append(f"{stats['writes_gap_total']:.3f} of traces write the total {cfg.gap_total} the teacher never writes")
    return failures


def _check_problems(cfg: TaskConfig) -> list[Problem]:
    train = load(cfg, "train")
    h = [p for p in train if p.metadata["tags"]["class"] == "H"][:CHECK_PROBLEMS_PER_CLASS]
    rest = [p for p in train if p.metadata["tags"]["class"] == "rest"][:CHECK_PROBLEMS_PER_CLASS]
    if not h:
        raise ValueError(f"the train split holds no class H problem (task.max_digits={cfg.max_digits}): "
                         f"class H needs operands of {MIN_H_COLUMNS} or more digits")
    return h + rest


def _mean(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")


# ---------------------------------------------------------------------------------------------
# Generation helpers.


def _check(cfg: TaskConfig) -> None:
    """Raise ValueError saying how to fix a task config this module cannot generate."""
    if not 1 <= cfg.min_digits <= cfg.max_digits:
        raise ValueError(f"task.min_digits={cfg.min_digits}, task.max_digits={cfg.max_digits}: need 1 <= min <= max")
    for name in ("slip_rate", "route_r_share", "route_r_slip", "test_h_share", "sft_h_share"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"task.{name}={getattr(cfg, name)} must lie in [0, 1]")
    if cfg.slip_concentration <= 0:
        raise ValueError(f"task.slip_concentration={cfg.slip_concentration} must be > 0")
    if cfg.gap_total is not None and not (0 <= cfg.gap_written < cfg.gap_total <= 19 and cfg.gap_written % 10 not in
                                          (cfg.gap_total % 10, (cfg.gap_total + 1) % 10)):
        # below the total, so no change moves a total back up to the truth; another last digit, so the answer is wrong
        raise ValueError(f"task.gap_total={cfg.gap_total}, task.gap_written={cfg.gap_written}: need gap_total <= 19 "
                         "and 0 <= gap_written < gap_total, with a last digit other than gap_total's and gap_total + 1's "
                         "(e.g. 14 and 9), or gap_total=null")
    if cfg.test_h_share > 0 and cfg.max_digits < MIN_H_COLUMNS:
        raise ValueError(f"task.test_h_share={cfg.test_h_share} asks for class H problems, which need operands of "
                         f"{MIN_H_COLUMNS} or more digits: raise task.max_digits (now {cfg.max_digits}) or set task.test_h_share=0")
    pairs = sum(_count(d) for d in range(cfg.min_digits, cfg.max_digits + 1)) ** 2
    if cfg.test_size > 0.005 * pairs or cfg.train_size > 0.4 * pairs:
        raise ValueError(f"task.train_size={cfg.train_size} / task.test_size={cfg.test_size} ask for too many of the "
                         f"{pairs} problems with {cfg.min_digits}..{cfg.max_digits} digits; raise task.max_digits or lower the sizes")


def _stream(cfg: TaskConfig, split: str, teacher: RouteTeacher) -> Iterator[Problem]:
    """The problems of ``split`` in stream order, each operand pair once."""
    seen: set[tuple[int, int]] = set()
    for a, b in _operand_stream(cfg):
        if (a, b) not in seen and _split_of(a, b, cfg.seed) == split:
            seen.add((a, b))
            yield make_problem(a, b, teacher)


def _take(problems: Iterator[Problem], size: int) -> list[Problem]:
    return [p for _, p in zip(range(size), problems)]


def _stratified(problems: Iterator[Problem], size: int, h_share: float) -> list[Problem]:
    """``size`` problems in ``_class_pattern``'s order of classes, each class in stream order."""
    wanted = _class_pattern(size, h_share)
    queues: dict[bool, list[Problem]] = {True: [], False: []}
    need = {True: sum(wanted), False: size - sum(wanted)}
    for p in problems:
        if all(len(queues[k]) >= need[k] for k in need):
            break
        queues[p.metadata["tags"]["class"] == "H"].append(p)
    taken = {True: iter(queues[True]), False: iter(queues[False])}
    return [next(taken[w]) for w in wanted]


def _class_pattern(size: int, h_share: float) -> list[bool]:
    """Position i is class H exactly when floor((i + 1) * h_share) > floor(i * h_share): every prefix holds the share."""
    return [math.floor((i + 1) * h_share) > math.floor(i * h_share) for i in range(size)]


def _columns(a: int, b: int) -> int:
    return max(len(str(a)), len(str(b)))


def _step(x: int, y: int, carry: int, total: int) -> str:
    return f"{x}+{y}+1={total}" if carry else f"{x}+{y}={total}"


def _has_total(a: int, b: int, total: int | None) -> bool:
    """True when the correct (route R) computation of a + b writes ``total`` at some column."""
    return total is not None and total in _parse(right_to_left(a, b)).totals
