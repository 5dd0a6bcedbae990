"""The code verifier's boot for stdin/stdout programs, run in the sandbox as ``main.py``.

It runs ``solution.py`` as ``__main__``, with ``exit``/``quit`` as ``site`` would define them (the
sandbox's ``-S`` leaves them out, and programs use them); the parent compares its stdout with the
expected output, which never enters the sandbox. Kept apart from :mod:`train.rewards.code_harness`
because every test case is a sandbox run of its own: this file imports nothing the program does
not, so a case costs no more than the program itself.
"""

import builtins
import sys

builtins.exit = builtins.quit = sys.exit  # type: ignore[attr-defined]
with open("solution.py", encoding="utf-8") as f:
    source = f.read()
namespace = {"__name__": "__main__", "__file__": "solution.py", "__builtins__": builtins}
exec(compile(source, "solution.py", "exec", dont_inherit=True), namespace)
