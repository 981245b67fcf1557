"""dfd: contracts shared by the gateway and the dispatcher, and the ``dfd`` command.

This package imports no media or ML library: the gateway depends on it.
"""

__version__ = "0.1.0"
