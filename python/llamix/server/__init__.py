"""An OpenAI-compatible HTTP server with continuous batching (``llamix serve``): Starlette on
uvicorn over :class:`llamix.model.BatchEngine`. Needs the ``serve`` extra
(``pip install 'llamix[serve]'``: starlette, uvicorn, prometheus_client)."""
from .app import create_app
from .run import serve

__all__ = ["create_app", "serve"]
