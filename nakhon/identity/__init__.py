"""Who may talk to the MQTT broker, and what each identity may do there.

Mosquitto enforces it with its dynamic security plugin: every device, bridge
and gateway is a client of the plugin with its own password and one role whose
ACLs say which topics it may publish to or subscribe to. Nakhon only writes
those clients and roles (:mod:`nakhon.identity.roles` says what they contain,
:mod:`nakhon.identity.dynsec` sends them to the broker); it never sits between
a device and the broker.
"""
