r"""Format rewards: does a completion answer in the shape its prompt template asked for?

Shaping terms to combine with a verifier (``task.rewards={math: 1.0, boxed_format: 0.1}``), never
verdicts on their own: a well-formed wrong answer still scores here. Completions are plain text, as
for every reward function in :mod:`train.rewards`.

Pure Python: no torch, no trainer.
"""

from __future__ import annotations

import re
from typing import Any

from train.rewards.math import last_boxed

# R1's layout (arXiv 2501.12948, Table 1): one think block, then one answer block, nothing after. As
# open-r1's format_reward, but any whitespace between and around the blocks (its regex wants newlines;
# the R1 template in train/tasks/templates.py shows the blocks separated by spaces).
_R1_LAYOUT = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)


def boxed_format(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
    r"""1.0 per completion that puts a final answer in a complete ``\boxed{...}``, else 0.0.

    >>> boxed_format(prompts=["", "", ""], completions=[r"so \boxed{12}.", r"\boxed{", "12"])
    [1.0, 0.0, 0.0]
    """
    return [float(last_boxed(completion) is not None) for completion in completions]


def r1_format(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
    """1.0 per completion laid out as ``<think>...</think> <answer>...</answer>``, each tag once, else 0.0.

    >>> r1_format(prompts=[""] * 3, completions=[
    ...     " <think>2+2 is 4</think> <answer>4</answer>",
    ...     "<think>a</think><answer>4</answer> and more",
    ...     "<think>a <think>b</think><answer>4</answer>",
    ... ])
    [1.0, 0.0, 0.0]
    """
    scores = []
    for completion in completions:
        match = _R1_LAYOUT.fullmatch(completion)
        nested = match is not None and any("<think>" in part or "<answer>" in part for part in match.groups())
        scores.append(float(match is not None and not nested))
    return scores


__all__ = ["boxed_format", "r1_format"]
