"""Processors: decode (by topic route) -> validate -> normalize -> enrich -> store."""
