"""Generated message classes of `keyway.base` (protoc, from the descriptor set)."""
