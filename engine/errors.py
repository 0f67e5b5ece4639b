"""What goes wrong, by kind. Every message is one line for a person; code tells the kinds apart by type,
never by the text.

    LivepropError           the base: the CLI prints it and exits 2, the dashboard shows it
      ConfigError           bad input: a config, a flag, a file to read (also a ValueError)
      RunStateError         a command that does not fit the run: no such run, already paused, ended
      StorageError          the store, a checkpoint or a run's file cannot be read or written
        DiskFull            ... because the disk holding it is full
"""


class LivepropError(Exception):
    """A failure a person can act on; the message is one line."""


class ConfigError(LivepropError, ValueError):
    """Bad input. The message says what is wrong and what is allowed."""


class RunStateError(LivepropError):
    """A command that does not fit the run's state: no such run, already paused, already ended."""


class StorageError(LivepropError):
    """The run store, a checkpoint or a run's file cannot be opened, read or written."""


class DiskFull(StorageError):
    """A write found the disk full; it can be tried again once there is space."""
