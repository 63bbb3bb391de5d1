"""Operating shopfloor: JSON logs with job ids, Prometheus metrics, OpenTelemetry traces.

See docs/operations.md for what each metric means and what to alert on.
"""
