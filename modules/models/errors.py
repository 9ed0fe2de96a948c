"""The one error a checkpoint can give: its own module so that detection (detect.py) and
the family registry (families/) can both raise it without importing each other."""
from __future__ import annotations


class CheckpointError(ValueError):
    """A file we cannot load: says which file and why, never a stack trace."""


class CheckpointNotFound(CheckpointError):
    """No checkpoint by that name, title, stem or hash (the API answers 404)."""
