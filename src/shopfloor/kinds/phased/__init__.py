"""Phased jobs (seed 003): agent turns through a gateway, durable waits, HTTP calls and child
jobs of any kind, from a declarative definition.

The descriptor lives in `kind.py`. This file stays empty on purpose: Temporal's workflow
sandbox imports the package for every workflow run.
"""
