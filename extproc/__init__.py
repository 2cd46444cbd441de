"""Quorum: an Envoy external processor that routes OpenAI-compatible LLM traffic."""

__version__ = "0.1.0"
