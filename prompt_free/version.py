"""The project's version (no imports: pyproject.toml reads it, PNG metadata records it)."""

__version__ = "0.1.0"
