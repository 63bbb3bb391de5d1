"""Schedules of any job kind (cron with a time zone, overlap policy, catch-up window), applied
from a file idempotently, and the kill switch. Not a job kind: a feature over all of them."""
