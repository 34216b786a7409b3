"""The orchestrator's own messages (`v1`) and its topic registry (`topics`)."""
