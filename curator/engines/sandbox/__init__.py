"""Run untrusted Python in a locked-down subprocess (see runner.py for what is enforced and how)."""

from curator.engines.sandbox.runner import (
    MASKED_DIRS, TMP_DIRS, UID_BASE, UID_SPAN, SandboxResult, protections, run_python, split_tests,
)

__all__ = ["MASKED_DIRS", "TMP_DIRS", "UID_BASE", "UID_SPAN", "SandboxResult", "protections", "run_python", "split_tests"]
