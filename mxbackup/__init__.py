"""mxbackup: a backup mail exchanger built on Twisted."""

__version__ = "0.1.0"
