"""Errors that the CLI turns into one clear line and an exit code.

UsageError (exit 2): the user asked for something that does not exist or is malformed.
CnnlabError (exit 1): a runtime problem the user can fix (missing files, unwritable folders).
"""


class CnnlabError(Exception):
    """A runtime problem with a message meant for the user; exit code 1."""

    exit_code = 1


class UsageError(CnnlabError):
    """Bad input on the command line or in a config; exit code 2."""

    exit_code = 2


class DataError(CnnlabError):
    """A dataset that is missing, unreadable or malformed."""


def os_reason(exc: OSError) -> str:
    """What an OSError says, in lower case and without the errno: 'no space left on device'."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]
