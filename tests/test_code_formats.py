"""The code verifier's benchmark formats beyond MBPP and HumanEval: EvalPlus's test scripts (MBPP+,
HumanEval+, with numpy), LiveCodeBench's hidden cases and its functional (LeetCode) problems.
Each format passes a right program and fails a wrong one, so neither verdict is a default."""

import json

from train.rewards import REWARDS

# The shape of EvalPlus's MBPP+ `test` field: helpers, inputs, results, an assertion loop by name.
MBPP_PLUS_SCRIPT = '''import numpy as np
from math import inf

def is_floats(x) -> bool:
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)):
        return all(isinstance(i, float) for i in x)
    if isinstance(x, np.ndarray):
        return x.dtype == np.float64 or x.dtype == np.float32
    return False


def assertion(out, exp, atol):
    if atol == 0 and is_floats(exp):
        atol = 1e-6
    if out != exp and atol != 0:
        assert np.allclose(out, exp, rtol=1e-07, atol=atol)
    else:
        assert out == exp, f"out: {out}, exp: {exp}"


inputs = [[3, 4], [0.5, 0.25], [-7, 7]]
results = [7, 0.75, 0]
for i, (inp, exp) in enumerate(zip(inputs, results)):
    assertion(add_numbers(*inp), exp, 0)
'''

# HumanEval+'s `test`: the same helpers inside check(candidate).
HUMANEVAL_PLUS_TEST = '''import numpy as np

def check(candidate):
    def assertion(out, exp, atol):
        if isinstance(exp, float):
            assert np.allclose(out, exp, rtol=1e-07, atol=atol or 1e-6)
        else:
            assert out == exp
    inputs = [[[1.0, 2.0]], [[]], [[0.1, 0.2]]]
    results = [1.5, 0.0, 0.15000000000000002]
    for inp, exp in zip(inputs, results):
        assertion(candidate(*inp), exp, 0)
'''

MEAN_RIGHT = "```python\ndef mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0\n```"
MEAN_WRONG = "```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```"  # fails the empty input


def test_mbpp_plus_test_script_runs_after_the_program():
    columns = {"test_script": [MBPP_PLUS_SCRIPT] * 3, "test_list": [["assert add_numbers(1, 2) == 3"]] * 3,
               "test_imports": [[]] * 3}  # fmt: skip
    completions = [
        "```python\ndef add_numbers(a, b):\n    return a + b\n```",
        "```python\ndef add_numbers(a, b):\n    return int(a + b)\n```",  # passes test_list, fails the float input
        "```python\ndef add_numbers(a, b):\n    return a + b\nimport sys\nsys.exit(0)\n```",  # exits before the tests
    ]
    assert REWARDS["code"](prompts=[""] * 3, completions=completions, **columns) == [1.0, 0.0, 0.0]


def test_humaneval_plus_tests_import_numpy_in_the_sandbox():
    rewards = REWARDS["code"](prompts=[""] * 2, completions=[MEAN_RIGHT, MEAN_WRONG],
                              test=[HUMANEVAL_PLUS_TEST] * 2, entry_point=["mean"] * 2)  # fmt: skip
    assert rewards == [1.0, 0.0]


def test_private_cases_count_like_public_ones():
    public = json.dumps([{"input": "2 3\n", "output": "5\n", "testtype": "stdin"}])
    private = [{"input": "10 -4\n", "output": "6\n", "testtype": "stdin"}]
    right = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    public_only = "```python\nprint(5)\n```"
    rewards = REWARDS["code"](prompts=[""] * 3, completions=[right, public_only, public_only],
                              tests=[public] * 3, private_tests=[private, private, None])  # fmt: skip
    assert rewards == [1.0, 0.0, 1.0]


def test_livecodebench_functional_problems_call_the_solution_method():
    cases = [{"input": "[4, 3, 2, 3, 1]\n[2, 2, 5, 2, 3, 6]", "output": "[3, 4]", "testtype": "functional"},
             {"input": "[1]\n[2]", "output": "[0, 0]", "testtype": "functional"}]  # fmt: skip
    starter_style = (  # LeetCode's starter code: List unimported, a class Solution
        "```python\nclass Solution:\n    def findIntersectionValues(self, nums1: List[int], nums2: List[int]) -> List[int]:\n"
        "        a, b = set(nums1), set(nums2)\n"
        "        return (sum(x in b for x in nums1), sum(x in a for x in nums2))\n```"
    )
    plain_function = (
        "```python\ndef findIntersectionValues(nums1, nums2):\n"
        "    return [sum(x in nums2 for x in nums1), sum(x in nums1 for x in nums2)]\n```"
    )
    wrong = "```python\nclass Solution:\n    def findIntersectionValues(self, nums1, nums2):\n        return [len(nums1), len(nums2)]\n```"
    rewards = REWARDS["code"](prompts=[""] * 3, completions=[starter_style, plain_function, wrong],
                              tests=[json.dumps(cases)] * 3, fn_name=["findIntersectionValues"] * 3)  # fmt: skip
    assert rewards == [1.0, 1.0, 0.0]
