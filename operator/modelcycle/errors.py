"""Errors that mean the user must fix something: the CLI prints them as one line, no traceback."""


class UserError(Exception):
    """A mistake in input, configuration or environment that the user can fix."""

    exit_code = 2
