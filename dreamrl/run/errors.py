"""Errors that stop a training run, kept apart so the CLI can catch them cheaply."""


class RunError(RuntimeError):
    """Training cannot go on; the message says why and where."""
