"""The one error type a run reports as bad input or environment (exit code 2), not as a crash."""


class UsageError(Exception):
    """A run that can't start: missing files, a bad checkpoint, no display; the message says what to do."""
