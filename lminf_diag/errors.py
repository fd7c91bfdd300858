"""Errors the toolkit raises on bad input: each message says what was wrong and what is accepted."""

from __future__ import annotations


class DiagError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class ModelNotFoundError(DiagError):
    """An unknown model name, a missing path, or a hub id that cannot be reached."""


class UnsupportedModelError(DiagError):
    """An architecture the patch or capture cannot handle (e.g. absolute positions)."""


class InvalidArgumentError(DiagError, ValueError):
    """An argument out of range (lengths, n_global, n_local, limit, layer or head indices)."""


class TextTooShortError(DiagError):
    """The text has fewer tokens than the requested window."""


class NumericalError(DiagError):
    """NaN or inf appeared in logits, statistics or loss."""


class RunDirectoryError(DiagError):
    """An output directory that holds another run, or a damaged run directory."""
