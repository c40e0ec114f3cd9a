"""Errors the engine raises for bad user input. Each message names the problem and the fix."""


class Next3DError(Exception):
    """Base class of every error meant to be shown to a user (the Blender glue reports these, and only these)."""


class InputError(Next3DError, ValueError):
    """A tensor, parameter or path given to the engine is malformed (wrong shape, dtype, NaN, missing file)."""


class CheckpointError(Next3DError):
    """A checkpoint cannot be read: wrong kind of file, unknown network, missing or unexpected weights, or a pickle
    that tries to run code."""


class OutputError(Next3DError):
    """A result could not be written (disk full, no permission, read-only folder); the message says what was kept
    and how to finish the work."""
