"""The library's parts, one module at a time (engine, sampling paths, formats, registry, CLI, packaging ...)."""
