"""The errors a user can fix: each message names the setting and what it accepts, shown as one line."""


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and what it accepts."""


class UsageError(ValueError):
    """A command line that cannot work: an unknown key, a malformed value, a missing argument."""
