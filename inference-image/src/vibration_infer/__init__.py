"""vibration-edge inference: validate a model on the node, then serve it over MQTT."""
