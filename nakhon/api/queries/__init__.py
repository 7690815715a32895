"""SQL behind the API: one module per resource, bound parameters only."""
