"""Errors a user can act on. The CLI and scripts print them without a traceback."""


class NexplainError(Exception):
    """Base class: the message alone must tell the user what to fix."""


class ConfigError(NexplainError):
    """The config fails the schema or names something that does not exist."""


class DataError(NexplainError):
    """A dataset file is missing, corrupt or malformed; the message names the file."""


class ModelError(NexplainError):
    """A model, checkpoint or layer cannot be loaded as asked."""
