"""Errors that hartvm reports to users as one clear line."""


class HartvmError(Exception):
    """A problem with what the user asked for (bad file, bad size, ...)."""
