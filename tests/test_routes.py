"""The routes task (the default study's): splits and tags, both teachers against the rules their
docstring states, the verifier on route traces, the per-step diagnostics, the base check, and (slow)
that GRPO prunes the minority route."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from train.config import TaskConfig
from train.rewards import REWARDS
from train.tasks import DIAGNOSTICS, TEACHERS, load_task
from train.tasks.routes import (
    ROUTE_L, ROUTE_R, RouteTeacher, base_check, diagnostics, is_class_h, left_to_right, make_problem, parse,
    right_to_left, route_teacher, strong_teacher_trace, teacher_correct_rate, teacher_trace,
)

ROUTES = TaskConfig(name="routes", loader="routes", min_digits=3, max_digits=4, train_size=4000, test_size=200)
reward = REWARDS["arithmetic"]


def _score(problems, traces) -> list[float]:
    return reward([p.prompt for p in problems], traces, answer=[p.answer for p in problems])


def _carries_through_nine(a: int, b: int) -> bool:
    """Class H by its definition, column by column with string digits (independent of is_class_h)."""
    width = max(len(str(a)), len(str(b)))
    xs, ys = str(a).zfill(width)[::-1], str(b).zfill(width)[::-1]
    carry_in = [0]
    for x, y in zip(xs, ys):
        carry_in.append((int(x) + int(y) + carry_in[-1]) // 10)
    return any(int(xs[i]) + int(ys[i]) == 9 and carry_in[i] == 1 for i in range(width - 1))


def test_splits_are_deterministic_disjoint_and_the_test_split_is_stratified():
    train, test = load_task(ROUTES, "train"), load_task(ROUTES, "test")
    assert [p.id for p in train] == [p.id for p in load_task(ROUTES, "train")]
    assert [p.id for p in test] == [p.id for p in load_task(ROUTES, "test")]
    assert (len(train), len(test)) == (4000, 200) and len({p.id for p in train + test}) == 4200
    unordered = lambda ps: {frozenset((p.metadata["a"], p.metadata["b"])) for p in ps}  # noqa: E731
    assert not unordered(train) & unordered(test)
    classes = [p.metadata["tags"]["class"] for p in test]
    assert classes[:6] == ["rest", "H"] * 3  # every prefix holds the share: 100 of 200, 50 of the first 100
    assert classes.count("H") == 100 and classes[:100].count("H") == 50
    natural = statistics.mean(p.metadata["tags"]["class"] == "H" for p in train)
    assert 0.06 < natural < 0.10, natural  # the train split is the stream as it comes: ~8% H
    gap = statistics.mean(p.metadata["tags"]["gap"] == "yes" for p in train)
    assert 0.12 < gap < 0.25, gap
    bigger_train = TaskConfig(**{**ROUTES.__dict__, "train_size": 5000})
    assert [p.id for p in load_task(bigger_train, "test")] == [p.id for p in test]
    quarter = TaskConfig(**{**ROUTES.__dict__, "test_h_share": 0.25})
    assert [p.metadata["tags"]["class"] for p in load_task(quarter, "test")].count("H") == 50


def test_tags_follow_their_definitions():
    for p in load_task(ROUTES, "train")[:2000]:
        a, b = p.metadata["a"], p.metadata["b"]
        assert (p.metadata["tags"]["class"] == "H") == _carries_through_nine(a, b) == is_class_h(a, b)
        true_totals = parse(right_to_left(a, b)).totals
        assert (p.metadata["tags"]["gap"] == "yes") == (14 in true_totals)
        assert p.prompt == f"{a}+{b}=" and p.answer == str(a + b)


def test_config_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="raise task.max_digits"):
        load_task(TaskConfig(name="routes", loader="routes", max_digits=2), "test")
    with pytest.raises(ValueError, match="route_r_share"):
        load_task(TaskConfig(**{**ROUTES.__dict__, "route_r_share": 1.5}), "train")
    with pytest.raises(ValueError, match="gap_total"):
        load_task(TaskConfig(**{**ROUTES.__dict__, "gap_total": 20}), "train")
    for written in (4, 5, 15):  # 14's or 15's last digit: the answer could stay right; 15: above the total
        with pytest.raises(ValueError, match="gap_written"):
            load_task(TaskConfig(**{**ROUTES.__dict__, "gap_written": written}), "train")


@pytest.mark.parametrize(
    "a, b, route_r, route_l",
    [
        # hand-worked: no carry chain, both routes right
        (47, 586, "R7+6=13,4+8+1=13,0+5+1=6#633", "L0+5+1=6,4+8+1=13,7+6=13#633"),
        # 1+9 carries into 9+0 (a 9 with a carry in): route L guesses no carry for 1+0 and writes 100, not 200
        (191, 9, "R1+9=10,9+0+1=10,1+0+1=2#200", "L1+0=1,9+0+1=10,1+9=10#100"),
        # a carry into the top column's 9 is not class H: route L guesses it from 9+1 and is right
        (99, 1, "R9+1=10,9+0+1=10#100", "L9+0+1=10,9+1=10#100"),
        # a chain of two 9s: both guesses above them miss
        (4991, 9, "R1+9=10,9+0+1=10,9+0+1=10,4+0+1=5#5000", "L4+0=4,9+0=9,9+0+1=10,1+9=10#4900"),
    ],
)
def test_noise_free_routes_by_hand(a, b, route_r, route_l):
    assert right_to_left(a, b) == route_r and left_to_right(a, b) == route_l
    p = make_problem(a, b)
    assert _score([p, p], [route_r, route_l]) == [1.0, 0.0 if is_class_h(a, b) else 1.0]


def test_weak_teacher_is_right_exactly_where_the_docstring_says():
    cfg = TaskConfig(**{**ROUTES.__dict__, "train_size": 3000})
    problems = load_task(cfg, "train")
    rng = random.Random(0)
    by_route: dict[str, list[tuple[float, float]]] = {ROUTE_R: [], ROUTE_L: []}
    for p in problems:
        for _ in range(4):
            trace = teacher_trace(p, rng)
            parsed = parse(trace)
            assert parsed is not None and parsed.replayed_answer() == parsed.answer  # answers follow the trace
            assert 14 not in parsed.totals  # the gap: 14 is never written
            right = _score([p], [trace])[0]
            if parsed.route == ROUTE_L and p.metadata["tags"]["class"] == "H":
                assert right == 0.0, trace  # route L is never right on class H
            if p.metadata["tags"]["gap"] == "yes":
                assert right == 0.0, trace  # nor is any route on a gap problem
            by_route[parsed.route].append((right, teacher_correct_rate(p, parsed.route)))
    share = len(by_route[ROUTE_R]) / (4 * len(problems))
    assert abs(share - 0.25) < 0.015, share  # 12,000 draws: standard error 0.004
    for route, pairs in by_route.items():
        measured, expected = statistics.mean(r for r, _ in pairs), statistics.mean(e for _, e in pairs)
        assert abs(measured - expected) < 0.02, (route, measured, expected)


def test_strong_teacher_writes_14_and_keeps_everything_else():
    never_slips = RouteTeacher(r_share=0.5, r_slip=0.0, l_slips={}, gap_total=14)
    gap_problem = make_problem(68, 76, never_slips)  # 8+6 = 14 and 6+7+1 = 14
    rng = random.Random(0)
    weak = {teacher_trace(gap_problem, rng) for _ in range(30)}
    strong = {strong_teacher_trace(gap_problem, rng) for _ in range(30)}
    assert weak == {"R8+6=9,6+7=13#139", "L6+7+1=9,8+6=9#99"}
    assert strong == {"R8+6=14,6+7+1=14#144", "L6+7+1=14,8+6=14#144"}
    h_problem = make_problem(191, 9, never_slips)
    assert {strong_teacher_trace(h_problem, rng) for _ in range(30)} == {right_to_left(191, 9), left_to_right(191, 9)}
    problems = load_task(ROUTES, "train")[:2000]
    rng = random.Random(1)
    rates = {ROUTE_R: [], ROUTE_L: []}
    for p in problems:
        trace = strong_teacher_trace(p, rng)
        route = trace[0]
        rates[route].append((_score([p], [trace])[0], teacher_correct_rate(p, route, knows_gap=True)))
    for route, pairs in rates.items():
        assert abs(statistics.mean(r for r, _ in pairs) - statistics.mean(e for _, e in pairs)) < 0.04, route


def test_slips_belong_to_facts_on_route_l_and_to_steps_on_route_r():
    teacher = route_teacher(ROUTES)
    assert len(teacher.l_slips) == 200 and min(teacher.l_slips.values()) < 0.05 < 0.7 < max(teacher.l_slips.values())
    assert teacher.l_slips == route_teacher(ROUTES).l_slips  # drawn from the task seed
    half = RouteTeacher(r_share=1.0, r_slip=0.5, l_slips={}, gap_total=None)
    p = make_problem(4723, 1154, half)  # totals 7, 7, 8, 5: none is 0, so each step slips half the time
    rng = random.Random(0)
    right = statistics.mean(_score([p], [teacher_trace(p, rng)])[0] for _ in range(4000))
    assert abs(right - 0.5**4) < 0.02, right


@pytest.mark.parametrize(
    "completion, score",
    [
        ("L0+5+1=6,4+8+1=13,7+6=13#633", 1.0),
        ("R7+6=13,4+8+1=13,0+5+1=6#633", 1.0),
        ("L0+5+1=6,4+8+1=13,7+6=13#634", 0.0),
        ("L0+5+1=6,4+8+1=13,7+6=13#633L", 0.0),  # anything after the answer
        ("L0+5+1=6,4+8+1=13,7+6=13 633", 0.0),  # no marker
    ],
)
def test_the_arithmetic_verifier_reads_route_traces(completion, score):
    assert reward(["47+586="], [completion], answer=["633"]) == [score]


def test_diagnostics_on_hand_made_completions():
    h, rest, gap = make_problem(191, 9), make_problem(47, 586), make_problem(68, 76)
    problems = [h, h, h, rest, rest, gap]
    completions = [
        "R1+9=10,9+0+1=10,1+0+1=2#200",  # H by route R, right
        "L1+0=1,9+0+1=10,1+9=10#100",  # H by route L, wrong as the method says
        "L1+0+1=2,9+0+1=10,1+9=10#100",  # route L with a true carry, but an answer its trace does not imply
        "R7+6=13,4+8+1=13,0+5+1=6#633",  # right
        "633",  # no route
        "R8+6=14,6+7+1=14#144",  # writes 14: right on a gap problem
    ]
    d = DIAGNOSTICS["routes"](problems, completions)
    assert d == diagnostics(problems, completions)
    assert d["route_R_share"] == [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    assert d["route_L_share"] == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert d["accuracy_H"] == [1.0, 0.0, 0.0, None, None, None]
    assert d["accuracy_rest"] == [None, None, None, 1.0, 0.0, 1.0]
    assert d["accuracy_gap"] == [None, None, None, None, None, 1.0]
    assert d["route_L_accuracy_H"] == [None, 0.0, 0.0, None, None, None]
    assert d["route_R_accuracy_H"] == [1.0, None, None, None, None, None]
    assert d["answer_follows_trace"] == [1.0, 1.0, 0.0, 1.0, None, 1.0]  # 2,10,10 implies 200, not 100
    assert d["writes_gap_total"] == [0.0, 0.0, 0.0, 0.0, None, 1.0]


def test_base_check_passes_a_student_that_writes_like_its_teacher_and_names_what_is_off():
    cfg = TaskConfig(**{**ROUTES.__dict__, "train_size": 2000})
    by_prompt = {p.prompt: p for p in load_task(cfg, "train")}

    def like_teacher(prompts, n, writer=teacher_trace, seed=0):
        rng = random.Random(seed)
        return [[writer(by_prompt[prompt], rng) for _ in range(n)] for prompt in prompts]

    good = base_check(cfg, like_teacher)
    assert good["passed"] and not good["failures"], good["failures"]
    assert good["problems"] == 96 and good["samples_per_problem"] == 16
    assert abs(good["stats"]["route_R_share"] - 0.25) < 0.05 and good["stats"]["route_L_accuracy_H"] == 0.0
    assert good["stats"]["answer_follows_trace"] == 1.0 and good["stats"]["writes_gap_total"] == 0.0
    assert abs(good["stats"]["route_R_accuracy_H"] - good["teacher"]["route_R_accuracy_H"]) < 0.08

    def route_l_only(prompts, n):  # a student that dropped route R: what RL later does
        return [[left_to_right(by_prompt[p].metadata["a"], by_prompt[p].metadata["b"])] * n for p in prompts]

    bad = base_check(cfg, route_l_only)
    assert not bad["passed"] and any("route R share 0.000" in f for f in bad["failures"])

    def leaks_carries(prompts, n):  # route L written, but the true sum as its answer
        return [[left_to_right(by_prompt[p].metadata["a"], by_prompt[p].metadata["b"]).split("#")[0]
                 + "#" + by_prompt[p].answer] * n for p in prompts]

    leak = base_check(cfg, leaks_carries)
    assert any("route L solves 1.000" in f for f in leak["failures"])
    assert any("answers follow their trace" in f for f in leak["failures"])

    def strong(prompts, n):  # the strong teacher writes 14: the weak teacher's base would not
        return like_teacher(prompts, n, writer=strong_teacher_trace)

    assert any("write the total 14" in f for f in base_check(cfg, strong)["failures"])


def test_both_built_in_tasks_have_teachers():
    assert set(TEACHERS.names()) >= {"arithmetic", "routes"}
    assert TEACHERS["routes"].check is base_check and TEACHERS["arithmetic"].check is None
    assert set(TEACHERS["routes"].alphabet) >= set("0123456789+=,#LR")


def test_routes_base_build_records_the_check(tmp_path, capsys):
    """A tiny routes base (seconds): build.json holds the check's numbers, and they are printed."""
    from train.base_model import ensure_builtin_base
    from train.config import BuiltinModelConfig, ModelConfig

    tiny = BuiltinModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, sft_steps=3,
                              sft_batch_size=4, sft_traces=12)
    folder = ensure_builtin_base(ModelConfig(cache_dir=str(tmp_path), builtin=tiny),
                                 TaskConfig(**{**ROUTES.__dict__, "train_size": 1500}), progress=False)
    check = json.loads((folder / "build.json").read_text())["base_check"]
    out = capsys.readouterr().out
    assert set(check["stats"]) >= {"route_R_share", "route_L_accuracy_H", "route_R_accuracy_H", "answer_follows_trace"}
    assert check["problems"] == 96 and check["seconds"] > 0
    assert "check against the teacher" in out
    assert not check["passed"] and "WARNING: the base model does not behave like its teacher" in out  # 3 SFT steps


@pytest.mark.slow
def test_grpo_prunes_the_minority_route(tmp_path):
    """Behaviour: from the default study's base (built in the default cache on first use, as
    tests/test_study.py does), GRPO on the routes task moves the route choice onto route L, the one
    that pays on most training problems: route R's share over the last 10 of 60 steps is under half
    of its share over the first 10 (the base samples it ~25% of the time)."""
    from tests.cli import metrics, run_cli

    run_dir = tmp_path / "grpo"
    run_cli("rlvr-train", [f"run_dir={run_dir}", "trainer.total_steps=60", "trainer.save_every=60",
                           "eval.after_train=false", "logger.wandb=false"], cwd=tmp_path, timeout=1200)
    share = [m["train/route_R_share"] for m in metrics(run_dir)]
    first, last = statistics.mean(share[:10]), statistics.mean(share[-10:])
    assert 0.15 < first < 0.35, f"the base samples route R {first:.3f} of the time; its teacher 0.25"
    assert last < 0.5 * first, f"route R share {first:.3f} -> {last:.3f}"
