"""Exception types. Each one encodes what the loop does next; only cli.py turns them into text."""

from __future__ import annotations


class HarnessError(Exception):
    """Base class. `hint` is the one line that tells the user what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class UsageError(HarnessError):
    """Bad input from the user (options, config, repository state): exit 2, nothing changed."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value is missing, unknown or contradictory."""


class LockHeld(UsageError):
    """Another harness owns this repository."""


class FatalError(HarnessError):
    """The loop cannot go on (data cache gone, disk full, git broken): abort with a report."""

    exit_code = 3


class AgentError(HarnessError):
    """The agent failed this experiment: recorded, and the loop goes on.

    `transient` marks failures that may pass by themselves (a timeout, rate limits, an overloaded
    or unreachable API): the loop backs off and goes on instead of counting them as the same
    error repeating."""

    def __init__(self, message: str, hint: str | None = None, transient: bool = False):
        super().__init__(message, hint)
        self.transient = transient


class AgentTimeout(AgentError):
    """The agent ran past its timeout and was stopped."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint, transient=True)


class AgentSetupError(UsageError):
    """The agent cannot start at all (binary missing, not logged in, no API key)."""


class CapExceeded(HarnessError):
    """A token or cost cap would be passed: the loop stops cleanly before the call."""

    exit_code = 0


class InfraError(HarnessError):
    """The executor failed (a lost worker, an unreachable cluster): not the idea's fault."""
