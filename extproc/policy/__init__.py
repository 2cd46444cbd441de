"""Operator policy compiled into the Runtime: guards on every request, per-client model access, and
the compile-time choice of the models Envoy may route without Quorum (the fast path)."""
