"""The `pipeline` job kind: ordered, health-gated, supervised start and stop of services."""
