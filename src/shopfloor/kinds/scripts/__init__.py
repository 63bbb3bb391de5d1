"""Script jobs: agent-written Python run durably in a sandboxed subprocess (seed 000).

The descriptor lives in `kind.py`. This file stays empty on purpose: Temporal's workflow
sandbox imports the package for every workflow run, so it must not pull in anything heavy.
"""
