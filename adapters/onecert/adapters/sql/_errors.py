"""What can stop the SQL adapter from starting or from answering."""

from __future__ import annotations

# The configuration is unusable; the message names the key at fault. One class
# for every onecert config, so `except ConfigError` catches them all.
from onecert.sdk._tomlconfig import ConfigError

__all__ = ["ConfigError", "DatabaseUnavailableError", "MappingError", "QueryFailedError"]


class MappingError(ConfigError):
    """The site's queries do not match the configuration (found at start).

    For example ``list_bindings`` does not return a column that ``[columns]``
    maps, or a statement fails against the database. The message names the
    keys and the columns.
    """


class DatabaseUnavailableError(Exception):
    """The database did not answer: unreachable, too slow, locked. Try again later.

    Messages carry no parameter values and no phone numbers.
    """


class QueryFailedError(Exception):
    """A statement failed for a reason retrying will not fix (an SQL error, or an
    unbind that matched more than one row and was rolled back).

    Messages carry no parameter values and no phone numbers.

    Attributes:
        invalid_value: the database refused a parameter's value (for example
            an account ref out of an integer column's range), not the statement.
    """

    def __init__(self, message: str, *, invalid_value: bool = False) -> None:
        super().__init__(message)
        self.invalid_value = invalid_value
