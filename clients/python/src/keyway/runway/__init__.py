"""Generated message classes of `keyway.runway` (protoc, from the descriptor set)."""
