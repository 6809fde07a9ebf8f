"""The two failures a user can fix, each with a one-line message: the ground floor every module may import.

stages.cli prints either as `error: <message>` and exits 2, without a traceback.
"""


class StageError(RuntimeError):
    """Bad data, a missing input or model, an accelerator that is not there: the file or key, and what is expected."""


class ParamsError(ValueError):
    """A params.yaml problem: the key and what is allowed there."""
