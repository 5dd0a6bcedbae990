r"""Verifier of math answers: extract the final answer, then ask math-verify whether it equals the gold.

Extraction (:func:`extract_answer`, plain Python in the caller) takes, in order of preference, the
last ``\boxed{...}`` (or ``\fbox{...}``, or ``\boxed 5`` without braces), the last R1-style
``<answer>...</answer>``, GSM8K's last ``#### n``, the last "the answer is ...", the last
"Answer: ..." (DAPO-Math's instruction). The last box is the final answer: when it is cut off (a
``\boxed{`` whose brace never closes), the completion states no answer, and neither an earlier box
nor a later marker counts in its place; otherwise ``\boxed{12} then \boxed{13`` would score as 12.
Empty boxes (an echoed instruction, ``\boxed{}``) are skipped.

Equivalence (:func:`check_equivalent`) wraps gold and candidate in ``\boxed{}`` and compares them
with math-verify's ``parse`` and ``verify`` (https://github.com/huggingface/Math-Verify): fractions
against decimals, percentages, units and ``\text`` wrappers, intervals, tuples and sets, matrices,
an equation against its right-hand side (``x = 3`` vs ``3``), scientific notation. Its limits come
along: floats are compared rounded to 6 decimals, so ``1e-9`` equals ``2e-9``, and ``12.5\%``
equals ``0.125`` but not ``12.5``.

math-verify bounds its own work with ``signal.alarm``, which only works in a process's main
thread, and sympy can spend minutes on an adversarial expression. So its timeouts are switched off
here and every check runs in a worker process of :mod:`train.rewards.pool`, whose per-sample wall-time
limit works from any thread and survives hangs and crashes.

Pure Python: no torch, no trainer.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import Any

from latex2sympy2_extended import antlr_parser
from math_verify import LatexExtractionConfig, parse, verify

from train.rewards.pool import score_in_pool

TIMEOUT_S = 5.0  # per check (parse both sides and compare); math-verify's own default is 5 s per step
WORKERS = min(4, os.cpu_count() or 1)  # checks take milliseconds; more workers mostly cost memory

_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_SPACES = re.compile(r"\s*")
_BOXED_BARE = re.compile(r"\s+([^\s$]+)")  # "\boxed 5": one token
# GSM8K's, prose, then DAPO-Math's last line "Answer: $Answer" (as verl's math_dapo reads it)
_PROSE_MARKERS = (
    re.compile("####"), re.compile(r"\banswer is\b", re.IGNORECASE), re.compile(r"\banswer\s*:", re.IGNORECASE)
)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_DOLLAR = re.compile(r"(?<!\\)\$")  # math delimiters, not "\$" (a currency sign)
# "18 dollars", "5 apples": prose answers name a unit in plain words; not "3 or four"
_NUMBER_THEN_WORDS = re.compile(r"([-+]?\d[\d,]*(?:\.\d+)?)(?:\s+(?!(?:or|and)\b)[A-Za-z]+)+")
_E_NOTATION = re.compile(r"([-+]?\d+(?:\.\d+)?)[eE]([-+]?\d+)")  # math-verify reads "1.5e3" as 1.5*e*3
_LATEX_ONLY = [LatexExtractionConfig(boxed_match_priority=0)]


def extract_answer(text: str) -> str | None:
    r"""The final answer of a completion, or None when it states none.

    >>> extract_answer(r"So $x = \boxed{\frac{1}{2}}$, not \boxed{3}... wait: $\boxed{\{1, 2\}}$.")
    '\\{1, 2\\}'
    >>> extract_answer(r"\fbox{12} cm"), extract_answer(r"thus $\boxed 5$.")
    ('12', '5')
    >>> extract_answer(r"\boxed{7} and \boxed{8") is None  # the final box is cut off: no answer
    True
    >>> extract_answer(r"The answer is 12. \boxed{12} then \boxed{13") is None
    True
    >>> extract_answer(r"\boxed{7}, as asked: within \boxed{}.")  # an empty box is skipped
    '7'
    >>> extract_answer(r"<think>maybe 4</think> <answer> $\frac{3}{4}$ </answer>")
    '\\frac{3}{4}'
    >>> extract_answer("She pays 9 * 2 = <<9*2=18>>18 dollars.\n#### 18"), extract_answer("#### $1,000")
    ('18', '1,000')
    >>> extract_answer("So the answer is 18 dollars. Done."), extract_answer("The final answer is: $3.5$.")
    ('18', '3.5')
    >>> extract_answer("The answer is 3, no, the answer is 4.")
    '4'
    >>> extract_answer("So 17 + 17 = 34.\nAnswer: $34$")
    '34'
    >>> extract_answer("I think it is 5.") is None, extract_answer(r"\boxed{}") is None
    (True, True)
    """
    decided, boxed = _final_box(text)
    if decided:
        return boxed
    tagged = _last_answer_tag(text)
    if tagged:
        return tagged
    for marker in _PROSE_MARKERS:
        for match in reversed(list(marker.finditer(text))):  # the last one on a line too
            line_end = text.find("\n", match.end())
            answer = _tidy_prose(text[match.end() : None if line_end == -1 else line_end].lstrip(" \t:"))
            if answer:
                return answer
    return None


def _last_answer_tag(text: str) -> str | None:
    """The content of the last non-empty ``<answer>...</answer>`` (searched from the end: a regex
    would rescan the rest of the text for every unclosed ``<answer>``)."""
    end = text.rfind("</answer>")
    while end != -1:
        start = text.rfind("<answer>", 0, end)
        if start == -1:
            return None
        answer = _tidy_prose(text[start + len("<answer>") : end])
        if answer:
            return answer
        end = text.rfind("</answer>", 0, start)
    return None


def last_boxed(text: str) -> str | None:
    r"""The content of the final ``\boxed{...}`` (or ``\fbox``), or None when there is none or it is cut off.

    >>> last_boxed(r"\boxed{5} then \boxed{6}"), last_boxed(r"\boxed{5} then \boxed{6"), last_boxed("6")
    ('6', None, None)
    """
    return _final_box(text)[1]


def _final_box(text: str) -> tuple[bool, str | None]:
    """(whether a box decides the answer, its content): walking back from the end, empty boxes are
    skipped; the first box that is cut off (content None) or non-empty decides."""
    boxes = list(_BOXED.finditer(text))
    closing = _matching_braces(text) if boxes else {}
    for match in reversed(boxes):
        content = _boxed_content(text, match.end(), closing)
        if content is None or content:
            return True, content
    return False, None


def _matching_braces(text: str) -> dict[int, int]:
    """Position of each ``{`` that is closed -> position of its ``}``, in one pass.

    One pass rather than a scan per box: a completion full of unclosed ``\\boxed{`` would make that
    quadratic, and extraction runs in the trainer, outside the pool's time limit.
    """
    closing: dict[int, int] = {}
    open_positions: list[int] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\":  # "\{" and "\}" are literal braces, not grouping
            position += 2
            continue
        if char == "{":
            open_positions.append(position)
        elif char == "}" and open_positions:
            closing[open_positions.pop()] = position
        position += 1
    return closing


def _boxed_content(text: str, start: int, closing: dict[int, int]) -> str | None:
    r"""What ``\boxed`` at ``text[:start]`` encloses: a balanced ``{...}`` group or one bare token;
    None when cut off (an unclosed brace, or nothing but spaces to the end), "" when empty."""
    opening = _SPACES.match(text, start).end()  # type: ignore[union-attr]  # \s* always matches
    if opening == len(text):
        return None  # "\boxed" was the last thing written
    if text[opening : opening + 1] != "{":
        bare = _BOXED_BARE.match(text, start)
        return bare.group(1).rstrip(".,;") if bare else ""
    if opening not in closing:
        return None  # cut off before its closing brace
    return text[opening + 1 : closing[opening]].strip()


def _tidy_prose(answer: str) -> str:
    """The answer in a line of prose: up to the end of its sentence, without delimiters or a unit word."""
    answer = _SENTENCE_END.split(answer, maxsplit=1)[0]
    answer = _DOLLAR.sub("", answer).replace("**", "").strip()
    for opening, closing in (("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(opening) and answer.endswith(closing):
            answer = answer[len(opening) : -len(closing)].strip()
    number = _NUMBER_THEN_WORDS.fullmatch(answer)
    return number.group(1) if number else answer


def _as_latex(answer: str) -> str:
    """An answer string as the LaTeX that math-verify should parse (the same for gold and candidate)."""
    answer = _DOLLAR.sub("", answer).strip()
    scientific = _E_NOTATION.fullmatch(answer)
    if scientific:
        answer = f"{scientific.group(1)}\\times 10^{{{scientific.group(2)}}}"
    return f"\\boxed{{{answer}}}"


def gold_answer(gold: Any) -> str:
    r"""The gold answer column as an answer string: raw GSM8K solutions give the part after ``####``.

    >>> gold_answer("3 + 4 = <<3+4=7>>7\n#### 7"), gold_answer(r"\frac{1}{2}"), gold_answer(12)
    ('7', '\\frac{1}{2}', '12')
    """
    text = str(gold).strip()
    _, hashes, tail = text.rpartition("####")
    return tail.strip() if hashes else text


def _allow_percent_atoms() -> None:
    r"""Let latex2sympy2_extended parse percentages ("50\%") under the antlr 4.9.3 runtime.

    Its converter asks every atom for ``FUNC_GAMMA`` (added with gamma support,
    https://github.com/huggingface/latex2sympy2_extended/pull/2), but the parser it ships for antlr
    4.9.3 (the runtime Hydra's omegaconf pins) was not regenerated and lacks that accessor, so every
    percentage raised AttributeError and could never match. That grammar has no gamma atom, so the
    missing accessor correctly answers None.
    """
    atom = antlr_parser.PSParser.AtomContext
    if not hasattr(atom, "FUNC_GAMMA"):
        atom.FUNC_GAMMA = lambda self: None


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once per process that its timeout is off: here that is the design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


_allow_percent_atoms()
for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


@functools.lru_cache(maxsize=4096)  # a group of samples shares one gold; samples repeat answers
def _parse(latex: str) -> list[Any]:
    return parse(latex, extraction_config=_LATEX_ONLY, parsing_timeout=None)  # type: ignore[arg-type]


def check_equivalent(gold: str, candidate: str) -> bool:
    r"""Whether answer ``candidate`` equals answer ``gold``, by math-verify, with no time limit.

    Run it through :func:`score_math` (worker processes with a time limit) unless you trust the input.

    >>> check_equivalent(r"\frac{1}{2}", "0.5"), check_equivalent(r"50\%", "0.5"), check_equivalent("3", "x = 3")
    (True, True, True)
    >>> check_equivalent("[1, 2)", "(1, 2)"), check_equivalent("1500", "1.5e3"), check_equivalent("7", "")
    (False, True, False)
    """
    gold_parsed, candidate_parsed = _parse(_as_latex(gold)), _parse(_as_latex(candidate))
    if not gold_parsed or not candidate_parsed:
        return False
    return bool(verify(gold_parsed, candidate_parsed, timeout_seconds=None))  # type: ignore[arg-type]


def _check_pair(pair: tuple[str, str]) -> float:
    """:func:`check_equivalent` on ``(gold, candidate)``, as the pool calls it."""
    return 1.0 if check_equivalent(*pair) else 0.0


def warm_up() -> None:
    """Pool initializer: the first parse loads the grammar (about half a second), not charged to a sample."""
    check_equivalent("\\frac{1}{2}", "0.5")


def score_math(
    completions: list[str], answers: list[Any], *, workers: int = WORKERS, timeout_s: float = TIMEOUT_S
) -> tuple[list[float], dict[str, int]]:
    """1.0 or 0.0 per completion, and the pool's failure counts (per distinct (gold, answer) pair).

    A completion without an extractable answer scores 0.0 without a check; identical (gold,
    answer) pairs are checked once.
    """
    if len(completions) != len(answers):
        raise ValueError(f"completions and answers differ in length: {len(completions)}, {len(answers)}")
    pairs = [(gold_answer(gold), extract_answer(completion)) for gold, completion in zip(answers, completions)]
    distinct = list(dict.fromkeys((gold, candidate) for gold, candidate in pairs if candidate is not None))
    verdicts, counts = score_in_pool(_check_pair, distinct, workers=workers, timeout_s=timeout_s, initializer=warm_up)
    verdict_of = dict(zip(distinct, verdicts))
    return [0.0 if candidate is None else verdict_of[(gold, candidate)] for gold, candidate in pairs], counts


def math_reward(prompts: list[str], completions: list[str], answer: list[Any], **_: Any) -> list[float | None]:
    """1.0 per completion whose final answer math-verify finds equal to the gold ``answer``, else 0.0.

    TRL's reward-function convention: dataset columns arrive as keyword arguments (here ``answer``).
    A check that raises, hangs past :data:`TIMEOUT_S` or crashes its worker scores 0.0.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"prompts and completions differ in length: {len(prompts)}, {len(completions)}")
    verdicts, counts = score_math(completions, answer)
    if any(counts.values()):
        logging.getLogger(__name__).warning("math checks that failed and scored 0.0: %s", counts)
    return list(verdicts)


__all__ = ["check_equivalent", "extract_answer", "gold_answer", "last_boxed", "math_reward", "score_math"]
