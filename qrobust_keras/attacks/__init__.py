"""Package attacks (filled in by its issue)."""
