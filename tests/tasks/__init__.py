"""Each task at library level on the tiny profile (no server)."""
