"""The REST API (FastAPI). ``create_app(engine)`` returns an ASGI app; the caller owns the engine."""

from engine.api.app import create_app

__all__ = ["create_app"]
