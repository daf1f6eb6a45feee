"""Package training (filled in by its issue)."""
