"""Package export (filled in by its issue)."""
