"""The dashboard: server-rendered pages at the controller's root (see `routes`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from shopfloor.controller.dashboard._static import PrecompressedFiles
from shopfloor.controller.dashboard.routes import LoginNeeded, jobs_list, login_redirect, router

STATIC = Path(__file__).parent / "static"

__all__ = ["install", "jobs_list"]


def install(app: FastAPI) -> None:
    """Pages under /ui (the jobs list is GET / for browsers), static files under /ui/static."""
    app.include_router(router)
    app.mount("/ui/static", PrecompressedFiles(directory=STATIC), name="dashboard-static")
    app.add_exception_handler(LoginNeeded, login_redirect)
