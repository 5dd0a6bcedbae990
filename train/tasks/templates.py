r"""Prompt templates: how a dataset's question becomes the text the policy sees (``task.template``).

A template has one signature, ``(text, columns) -> prompt``: ``text`` is the row's question (the
``task.prompt_field``), ``columns`` the verifier columns the task carries (``task.columns``), which
the code template shows as tests. Templates are plain text; ``task.chat=true`` additionally wraps
the result in the tokenizer's chat template with :func:`apply_chat`, at the caller, because only the
caller has the tokenizer.

>>> TEMPLATES["boxed"]("What is 1+1?", {})
'What is 1+1?\nPlease reason step by step, and put your final answer within \\boxed{}.'
>>> TEMPLATES["nope"]
Traceback (most recent call last):
...
KeyError: "unknown prompt template 'nope'; known: boxed, code, plain, r1"
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

from algorithms.registry import Registry
from train.tasks import Problem

Template = Callable[[str, Mapping[str, Any]], str]
TEMPLATES: Registry[Template] = Registry("prompt template")

# The zero-shot math prompt of Qwen2.5-Math's evaluation, used by SimpleRL-Zoo and by Yue et al.,
# "Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs Beyond the Base Model?"
# (arXiv 2504.13837), whose pass@k study this framework reproduces.
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# DeepSeek-R1-Zero's training template (arXiv 2501.12948, Table 1). Departure: the paper writes
# "User: prompt. Assistant:"; the question goes on its own line here (no period after a "?"), as in
# TinyZero and open-r1. The math verifier reads the final answer from <answer>...</answer>.
R1_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>.\n"
    "User: {text}\nAssistant:"
)

CODE_FENCE_INSTRUCTION = "Write your solution as one complete Python program in a single ```python code block."


@TEMPLATES.register("plain")
def plain(text: str, columns: Mapping[str, Any]) -> str:
    """The question as it is (a dataset whose prompts already carry their instructions)."""
    return text


@TEMPLATES.register("boxed")
def boxed(text: str, columns: Mapping[str, Any]) -> str:
    """The question, then the zero-shot instruction to reason and box the answer."""
    return f"{text}\n{BOXED_INSTRUCTION}"


@TEMPLATES.register("r1")
def r1(text: str, columns: Mapping[str, Any]) -> str:
    """DeepSeek-R1-Zero's think/answer template around the question.

    >>> r1("What is 1+1?", {}).endswith("User: What is 1+1?\\nAssistant:")
    True
    """
    return R1_TEMPLATE.format(text=text)


@TEMPLATES.register("code")
def code(text: str, columns: Mapping[str, Any]) -> str:
    """A coding task in its benchmark's convention, asking for a ```python block.

    - MBPP (``test_list``): the task, then "Your code should pass these tests:" and the asserts, as in
      the MBPP paper's prompt (Austin et al. 2021, arXiv 2108.07732, Sec. 2.2) and bigcode's harness.
    - HumanEval (``entry_point``): the signature and docstring in a fence, to be completed. The
      verifier does not prepend this prompt, so the answer must be the whole function with its imports.
    - stdin/stdout (``tests``, LiveCodeBench): the statement; the program reads stdin, writes stdout.
    - functional (``fn_name`` and ``starter_code``, LiveCodeBench's LeetCode problems): the statement
      and the starter code to complete.

    >>> print(code("Add one.", {"test_list": ["assert f(1) == 2"]}))
    Add one.
    Your code should pass these tests:
    <BLANKLINE>
    assert f(1) == 2
    <BLANKLINE>
    Write your solution as one complete Python program in a single ```python code block.
    """
    if columns.get("test_list"):
        asserts = "\n".join(columns["test_list"])
        return f"{text}\nYour code should pass these tests:\n\n{asserts}\n\n{CODE_FENCE_INSTRUCTION}"
    if columns.get("entry_point"):
        return (
            f"Complete the following Python function `{columns['entry_point']}`.\n\n```python\n{text.rstrip()}\n```\n\n"
            "Write the complete function, with its imports and signature, in a single ```python code block."
        )
    if columns.get("fn_name") and columns.get("starter_code"):  # LiveCodeBench's LeetCode problems, its wording
        return (
            f"{text}\n\nYou will use the following starter code to write the solution to the problem.\n"
            f"```python\n{columns['starter_code'].rstrip()}\n```\n\n{CODE_FENCE_INSTRUCTION}"
        )
    if "tests" in columns:
        return f"{text}\n\nRead the input from standard input and write the answer to standard output.\n{CODE_FENCE_INSTRUCTION}"
    return f"{text}\n\n{CODE_FENCE_INSTRUCTION}"


def apply_chat(prompts: Sequence[str], tokenizer: Any) -> list[str]:
    """Each templated prompt as one user turn in ``tokenizer``'s chat template, ready for the reply.

    Raises ValueError saying to set ``task.chat=false`` when the tokenizer has no chat template (base
    models and the built-in tokenizer have none). The result usually begins with the BOS token.
    """
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"task.chat=true but the tokenizer {name!r} has no chat template; set task.chat=false "
            "(the prompt is then fed as plain text) or use a model whose tokenizer has one"
        )
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        for prompt in prompts
    ]


def chat_problems(problems: Sequence[Problem], tokenizer: Any) -> list[Problem]:
    """``problems`` with their prompts wrapped by :func:`apply_chat` (ids, answers, columns unchanged)."""
    wrapped = apply_chat([p.prompt for p in problems], tokenizer)
    return [replace(problem, prompt=prompt) for problem, prompt in zip(problems, wrapped)]


__all__ = ["TEMPLATES", "Template", "apply_chat", "chat_problems"]
