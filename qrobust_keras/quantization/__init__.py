"""Package quantization (filled in by its issue)."""
