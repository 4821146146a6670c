"""graphfix's exceptions: one base class, one subclass per kind of failure the caller can act on."""
from __future__ import annotations


# The command line's exit codes: done (and checked), a check failed or problems remain, bad input/usage.
EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def printable(exc: BaseException) -> str:
    """One line whatever the model's names hold: control characters and undecodable bytes escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(exc))


class GraphfixError(Exception):
    """Base of every error graphfix raises on purpose."""


class UsageError(GraphfixError):
    """The caller asked for something that cannot be done (unknown pass, bad flag value)."""


class InputError(GraphfixError):
    """The input model cannot be used: not a file, not ONNX, truncated, cyclic, dangling inputs.

    The message always names the source (file path or "<bytes>") and the problem, on one line.
    """

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class OutputError(GraphfixError):
    """The output cannot be written where asked (would overwrite the input, directory missing)."""


class PassError(GraphfixError):
    """A pass raised; carries the pass name and the passes that ran before it."""

    def __init__(self, pass_name: str, ran_before: list[str], cause: BaseException):
        self.pass_name = pass_name
        self.ran_before = list(ran_before)
        self.cause = cause
        before = ", ".join(ran_before) or "none"
        super().__init__(f"pass '{pass_name}' failed (passes run before it: {before}): "
                         f"{type(cause).__name__}: {cause}")


class PipelineOrderError(GraphfixError):
    """The written pipeline order violates a pass's declared ordering constraints."""


class CheckError(GraphfixError):
    """A check could not be carried out at all (as opposed to a check that ran and failed)."""
