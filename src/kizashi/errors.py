"""Exception types shared across kizashi. Every error names what is wrong and where."""


class KizashiError(Exception):
    """Base class for errors kizashi raises on purpose (bad input, bad config)."""


class ConfigError(KizashiError):
    """A config file is missing, unparsable, or has an unknown key / wrong type."""


class DataValidationError(KizashiError):
    """Raw input data breaks a schema rule. The message names file, column and example rows."""
