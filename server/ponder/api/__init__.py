"""HTTP shell: app factory, routes, schemas, errors, SSE."""

from .app import create_app

__all__ = ["create_app"]
