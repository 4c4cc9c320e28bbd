"""Errors a user can cause and fix; the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """A bad config value, a missing file, a malformed data row: the message says what to fix."""


class ConfigError(UserError, ValueError):
    """A value its config key does not accept (nsr_lightning/config_rules.py); a ValueError too,
    for code that builds the objects from Python."""


class RunStopped(Exception):
    """A run that stopped itself on purpose (e.g. too many non-finite updates in a row)."""
