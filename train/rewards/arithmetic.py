"""Verifier of the built-in arithmetic task: is the completion's final answer the gold answer?

Extraction is strict, so that formatting cannot earn reward: the answer is the text after the
*last* answer marker (``#``) up to the end of the completion, with surrounding whitespace
removed, and it must be a plain non-negative integer written in digits only. A missing marker,
an empty answer, or anything else after the marker (other characters, a second number, special
tokens left in by decoding with ``skip_special_tokens=False``) scores 0.0. The comparison is
string equality, so "0633" does not match "633": the task's traces never write leading zeros.

Pure Python: no torch, no trainer.
"""

from __future__ import annotations

import re
from typing import Any

from train.tasks.arithmetic import MARKER

_INTEGER = re.compile(r"[0-9]+")


def extract_answer(completion: str) -> str | None:
    """The final answer of ``completion``, or None when it has none in the strict format.

    >>> extract_answer("7+6=13,4+8+1=13,0+5+1=6#633")
    '633'
    >>> extract_answer("#12#633 ")  # the last marker counts
    '633'
    >>> extract_answer("7+6=13") is None, extract_answer("#") is None, extract_answer("#633x") is None
    (True, True, True)
    >>> extract_answer("#6 33") is None, extract_answer("#-633") is None
    (True, True)
    """
    _, marker, tail = completion.rpartition(MARKER)
    if not marker:
        return None
    answer = tail.strip()
    return answer if _INTEGER.fullmatch(answer) else None


def arithmetic_reward(prompts: list[str], completions: list[str], answer: list[str], **_: Any) -> list[float | None]:
    """1.0 per completion whose extracted answer equals the gold ``answer``, else 0.0.

    TRL's reward-function convention: dataset columns arrive as keyword arguments (here
    ``answer``), and any other column is ignored.

    >>> arithmetic_reward(
    ...     prompts=["47+586="] * 5,
    ...     completions=["7+6=13,4+8+1=13,0+5+1=6#633", "#634", "633", "#633#", "#633<eos>"],
    ...     answer=["633"] * 5,
    ... )
    [1.0, 0.0, 0.0, 0.0, 0.0]
    """
    if not len(prompts) == len(completions) == len(answer):
        raise ValueError(
            f"prompts, completions and answer differ in length: {len(prompts)}, {len(completions)}, {len(answer)}"
        )
    return [1.0 if extract_answer(c) == str(gold).strip() else 0.0 for c, gold in zip(completions, answer)]
