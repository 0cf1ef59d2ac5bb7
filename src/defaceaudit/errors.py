"""Exceptions whose message is one line that names the file or subject and the problem."""


class DefaceAuditError(Exception):
    """Base class: ``str(err)`` is a complete one-line message for the user."""


class InputError(DefaceAuditError):
    """The cohort description (BIDS dataset, manifest, config) is wrong."""


class ImageError(DefaceAuditError):
    """An image file is unreadable or not a usable 3-D head volume."""


class FetchError(DefaceAuditError):
    """A file from the package index could not be fetched or failed its checksum."""
