"""Package defenses (filled in by its issue)."""
