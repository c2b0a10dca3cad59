"""Errors that mean "the user's input is wrong", as opposed to a bug in ais_jax.

Command-line entry points (``experiments/``) catch :class:`UserInputError` and end with its
one-line message and exit status 2 instead of a traceback. It subclasses ``ValueError`` so that
library callers who catch ``ValueError`` keep working.
"""

from __future__ import annotations


class UserInputError(ValueError):
  """A problem with a file, flag or array the user supplied.

  Attributes:
    input_name: what was wrong, as the user named it (a flag such as ``--human``, a path, or an
      argument name); None when the message already says it.
    problem: the problem and how to fix it, without the input name.
  """

  def __init__(self, input_name: str | None, problem: str):
    self.input_name = input_name
    self.problem = " ".join(str(problem).split())  # One line, whatever the source message had.
    super().__init__(self.problem if not input_name else f"{input_name}: {self.problem}")
