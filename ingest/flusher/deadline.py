"""A client-side deadline for blocking work on one socket: past it, the socket is shut down.

PostgreSQL's statement_timeout is enforced by the server, so it cannot end a
wait on a server that does not run (SIGSTOPped, swapped out, wedged). Such a
server's kernel keeps the TCP connection open and acknowledges whatever is
sent, so TCP keepalives and tcp_user_timeout never fire either. Shutting the
socket down from a timer thread wakes the blocked call with an error at once;
the connection is then unusable and must be closed.
"""

from __future__ import annotations

import socket
import threading


class SocketDeadline:
    """Context manager: shut down socket `fileno` if the block is still running after `seconds`."""

    def __init__(self, fileno: int, seconds: float):
        self.fileno, self.seconds = fileno, seconds
        self.expired = False
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> SocketDeadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        with self._lock:  # after this, the timer can no longer touch the socket
            self._done = True
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            shutdown(self.fileno)


def shutdown(fileno: int) -> None:
    """Shut down both directions of the socket behind a file descriptor (which stays open)."""
    try:
        with socket.socket(fileno=fileno) as sock:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.detach()  # the descriptor belongs to its connection, not to us
    except OSError:
        pass  # already closed or reset: the blocked call has returned anyway
