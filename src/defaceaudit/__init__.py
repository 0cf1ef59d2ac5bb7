"""defaceaudit: audit MRI defacing (refacing attacks, face metrics, cost to research)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("defaceaudit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
