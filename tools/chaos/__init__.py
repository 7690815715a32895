"""``make chaos``: one component hurt mid-stream at a time, and what was stored of N readings."""
