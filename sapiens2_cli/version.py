"""The version of sapiens2-cli, in a module of its own so any layer can record it."""

__version__ = "0.1.0"
