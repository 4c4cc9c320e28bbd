"""Errors a user can cause and fix; the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """A bad config value, a missing file, a malformed data row: the message says what to fix."""


class RunStopped(Exception):
    """A run that stopped itself on purpose (e.g. too many non-finite updates in a row)."""
