"""The one exception family users see; each message names the file, key or value and what to do."""


class StokerError(Exception):
    """Base of errors stoker raises for a person to act on."""


class DataError(StokerError, ValueError):
    """Data that is missing, corrupt or not what the dataset declares."""


class CorruptDataError(DataError):
    """A file whose bytes are damaged (bad CRC, truncation, wrong size)."""
