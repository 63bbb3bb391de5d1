"""shopfloor: durable jobs for agent systems, on Temporal."""

__version__ = "0.1.0"
