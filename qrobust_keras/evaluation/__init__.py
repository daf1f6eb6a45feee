"""Package evaluation (filled in by its issue)."""
