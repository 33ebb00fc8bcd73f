"""The operator's configuration: YAML in, frozen objects out.

Pure: no reactor, no network.  Every problem is reported as one line naming the file, the key
path and the reason, before anything listens.

- `model`: the frozen dataclasses; each field carries its key's default, doc and reader.
- `reader`: the generic reader that walks those fields, and the one-line messages.
- `scalars`, `values`: the value readers (plain values; names, targets, addresses, secrets).
- `load`: the file and its YAML, `load` and `parse`.
"""

from mxbackup.config.load import load, parse
from mxbackup.config.model import (
    ALL_ALLOWED,
    DEFAULT_IP_RANGES,
    INTERNET_AUTH,
    KINDS,
    MATRIX_KEYS,
    NO_AUTH,
    SECURITIES,
    Account,
    Authentication,
    Config,
    DeliveryConfig,
    IPRange,
    Kind,
    ManholeConfig,
    Matrix,
    MetricsConfig,
    Route,
    Security,
    ServerConfig,
    TLSConfig,
)
from mxbackup.config.reader import ConfigError
from mxbackup.config.values import AddressList, IPNetwork, Target

__all__ = [
    "ALL_ALLOWED",
    "DEFAULT_IP_RANGES",
    "INTERNET_AUTH",
    "KINDS",
    "MATRIX_KEYS",
    "NO_AUTH",
    "SECURITIES",
    "Account",
    "AddressList",
    "Authentication",
    "Config",
    "ConfigError",
    "DeliveryConfig",
    "IPNetwork",
    "IPRange",
    "Kind",
    "ManholeConfig",
    "Matrix",
    "MetricsConfig",
    "Route",
    "Security",
    "ServerConfig",
    "TLSConfig",
    "Target",
    "load",
    "parse",
]
