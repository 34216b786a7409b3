"""Generated message classes of `keyway.orchestrator.v1` (protoc, from the descriptor set)."""
