"""Package regularizers (filled in by its issue)."""
