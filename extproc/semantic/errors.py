"""Errors of the embedding engines (importable without numpy or onnxruntime)."""

from __future__ import annotations


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (a package or the model is missing); the message says what to install."""


class EmbeddingError(RuntimeError):
    """One embedding call failed (the remote endpoint answered with an error, timed out, or sent junk)."""
