"""uvicorn around the app: one configuration for the command, the tests and the benchmark.

``uvicorn_config`` sets the connection-level bounds (idle keep-alive connections closed after
``KEEP_ALIVE_S``; uvicorn itself answers 503 past ``CONNECTIONS_PER_SLOT * max_concurrency + 1``
open connections, so slow or idle clients cannot pile up sockets without bound).
``BackgroundServer`` runs it on a thread (tests, the browser test).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

KEEP_ALIVE_S = 5
CONNECTIONS_PER_SLOT = 4
GRACEFUL_SHUTDOWN_S = 5
START_TIMEOUT_S = 30.0
POLL_S = 0.01


def uvicorn_config(
    app: Any, *, host: str, port: int, max_concurrency: int, log_level: str = "warning"
) -> Any:
    """The ``uvicorn.Config`` that serves ``app`` (see the module docstring for the bounds)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=CONNECTIONS_PER_SLOT * max_concurrency + 1,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
        access_log=False,
        log_level=log_level,
        lifespan="off",
    )


class BackgroundServer:
    """uvicorn serving ``app`` on a daemon thread, as a context manager.

    Args:
        app: the ASGI app (``create_app``).
        host: the address to listen on.
        port: the TCP port (0: a free one, read back into ``port``).
        max_concurrency: as given to ``create_app`` (sizes the connection bound).

    Attributes:
        port: the port it listens on, once started.
        url: ``http://host:port``.
    """

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, max_concurrency: int = 4
    ) -> None:
        import uvicorn

        self.host = host
        self.port = port
        self.server = uvicorn.Server(
            uvicorn_config(app, host=host, port=port, max_concurrency=max_concurrency)
        )
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.host}:{self.port}")
            time.sleep(POLL_S)
        sockets = [s for server in self.server.servers for s in server.sockets]
        self.port = int(sockets[0].getsockname()[1])
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self.thread.join(START_TIMEOUT_S)
