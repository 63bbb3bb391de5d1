"""The seed's PoetryResearchWorkflow (seed 003). Descriptor in `kind.py`; this stays empty."""
