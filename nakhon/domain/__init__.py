"""The ideas every part of Nakhon shares, and nothing else: no I/O, no clients.

- :mod:`~nakhon.domain.identifiers`: the shapes of sensor and city ids;
- :mod:`~nakhon.domain.records`: the values that travel from MQTT message to row;
- :mod:`~nakhon.domain.raw_record`: the ``nakhon.raw`` wire format, written by the
  gateway and read by the processor;
- :mod:`~nakhon.domain.catalogue`: the metrics, their units and ranges;
- :mod:`~nakhon.domain.aqi`: the Thai and US air-quality indices.

The gateway (``ingest``), the processors, storage and the API import from here
and never from each other (``[tool.importlinter]`` in pyproject.toml).
"""
