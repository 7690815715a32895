"""``make bench``: end-to-end throughput and latency, beside the machine's raw ceilings."""
