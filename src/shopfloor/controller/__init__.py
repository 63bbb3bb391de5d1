"""The stateless HTTP controller: starts and watches jobs; every answer comes from Temporal."""

from shopfloor.controller.app import create_app

__all__ = ["create_app"]
