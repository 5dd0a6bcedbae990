"""Reward functions imported by path in tests (``task.rewards={tests.reward_plugins.half: 0.5}``),
written as a TRL user would: plain functions in the TRL calling convention."""


def half(prompts, completions, **kwargs):
    """0.5 for every completion."""
    return [0.5] * len(completions)


def only_long(prompts, completions, **kwargs):
    """1.0 for completions longer than 3 characters; None (does not apply) for the rest."""
    return [1.0 if len(c) > 3 else None for c in completions]


def even_last_digit(prompts, completions, **kwargs):
    """The last digit / 10 where it is even; None (does not apply) where it is odd."""
    return [int(c[-1]) / 10 if c[-1] in "02468" else None for c in completions]


def too_few(prompts, completions, **kwargs):
    return [1.0]


NOT_A_FUNCTION = 3


def digit_share(prompts, completions, **kwargs):
    """The share of digits among a completion's characters: varies between any two texts, so a group's
    advantages are not all zero even when no answer is right."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]
