"""Run the server on uvicorn until SIGINT / SIGTERM."""
from __future__ import annotations

import logging
import socket
import sys
import threading

import uvicorn

from ..model import Model
from .app import ACCESS_LOG, MAX_BODY_BYTES, create_app


def serve(model: Model, host: str = "127.0.0.1", port: int = 8080, n_parallel: int = 4, *, name: str | None = None,
          api_key: str | None = None, max_queue: int = 64, max_body_bytes: int = MAX_BODY_BYTES,
          n_batch: int | None = None, shutdown_timeout: float = 10.0, log_level: str = "info",
          sock: socket.socket | None = None) -> None:
    """Serve ``model`` at http://host:port until SIGINT or SIGTERM; then requests still running get
    ``shutdown_timeout`` seconds to finish before they are cancelled, and the function returns.
    Access log lines (JSON) go to stderr. ``sock``: a socket bound already (to host:port), to
    listen on instead of binding one here. Arguments as :func:`llamix.server.create_app`."""
    app = create_app(model, n_parallel, name=name, api_key=api_key, max_queue=max_queue,
                     max_body_bytes=max_body_bytes, n_batch=n_batch, shutdown_timeout=shutdown_timeout)
    if not ACCESS_LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        ACCESS_LOG.addHandler(handler)
        ACCESS_LOG.setLevel(logging.INFO)
        ACCESS_LOG.propagate = False
    # uvicorn's own deadline comes later than the engine's: the requests the engine ends at
    # shutdown_timeout still send their answers before uvicorn closes what is left
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=shutdown_timeout + _ANSWER_SECONDS, lifespan="on")
    if sock is not None:   # uvicorn says where it listens only for the sockets it binds itself
        host_, port_ = sock.getsockname()[:2]
        logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)",
                                                f"[{host_}]" if ":" in host_ else host_, port_)
    server = _Server(config, app.state.server.engine, shutdown_timeout)
    try:
        server.run(sockets=None if sock is None else [sock])
    finally:
        server.deadline.cancel()


_ANSWER_SECONDS = 5.0


class _Server(uvicorn.Server):
    """uvicorn's server whose first SIGINT / SIGTERM also sets the engine's deadline: requests still
    running ``shutdown_timeout`` seconds later are ended by the engine, and their handlers answer
    (503, or an error event and ``[DONE]`` in a stream). Left to uvicorn, their handlers would be
    cancelled instead: a bare 500, a stream cut off, and a traceback in the log."""

    def __init__(self, config: uvicorn.Config, engine, shutdown_timeout: float):
        super().__init__(config)
        self.deadline = threading.Timer(shutdown_timeout, engine.stop)
        self.deadline.daemon = True

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit:
            self.deadline.start()
        super().handle_exit(sig, frame)
