"""Errors a user can act on. The CLI and scripts print them without a traceback."""

import re

# torch re-raises an error of a DataLoader worker (or pin-memory thread) as
# `type(exc)(f"Caught {name} {where}.\nOriginal {formatted traceback}")`.
_WRAPPED = re.compile(r"Caught \w+ [^\n]*\.\nOriginal Traceback \(most recent call last\):\n")


class NexplainError(Exception):
    """Base class: the message alone must tell the user what to fix."""

    def __init__(self, *args):
        original = _unwrap(args[0], type(self)) if len(args) == 1 and isinstance(args[0], str) else None
        if original is None:
            super().__init__(*args)
        else:  # torch's worker re-raise: keep our one-line message; the worker's traceback
            super().__init__(original)  # becomes a note, shown in a full traceback only
            self.add_note(args[0])


class ConfigError(NexplainError):
    """The config fails the schema or names something that does not exist."""


class DataError(NexplainError):
    """A dataset file is missing, corrupt or malformed; the message names the file."""


class ModelError(NexplainError):
    """A model, checkpoint or layer cannot be loaded as asked."""


def _unwrap(text: str, exc_type: type) -> str | None:
    """The original message inside torch's worker re-raise text, or None if `text` is not one."""
    if not _WRAPPED.match(text):
        return None
    name = exc_type.__qualname__
    if exc_type.__module__ not in ("builtins", "__main__"):
        name = f"{exc_type.__module__}.{name}"
    # The original exception's line closes the formatted traceback (after any chained causes).
    head = text.rfind(f"\n{name}: ")
    return text[head + len(name) + 3:].strip() if head >= 0 else None


def one_line(exc: BaseException) -> str:
    """What to log for `exc`: the original message of an error re-raised from a DataLoader
    worker (not torch's wrapper with the worker's traceback), else str(exc)."""
    text = str(exc)
    return _unwrap(text, type(exc)) or text


def first_line(exc: BaseException) -> str:
    """The first line of a library's error, for the cause part of our own message.

    torch's load errors, for one, run to paragraphs of advice after the line that names
    the problem."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
