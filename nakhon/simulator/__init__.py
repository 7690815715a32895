"""A fleet of simulated city sensors publishing over MQTT (``nakhon simulate``)."""
