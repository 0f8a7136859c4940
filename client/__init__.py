"""The Python client of the Tally API: batched, retried, exactly-once counting, and reads.

    from tally.client import Client
    tally = Client("http://127.0.0.1:8080", write_token, read_token=read_token)
    tally.count("views", "video:42", user="u-1")
    tally.flush()

It needs only the standard library and requests, and imports nothing else of
Tally, so an application can use it without the server's dependencies.
"""

from tally.client.client import Client
from tally.client.errors import (
    ClientClosed,
    Failure,
    ProblemError,
    QueueFull,
    TallyError,
    UnsentEvents,
)
from tally.client.http import Backoff

__all__ = ["Backoff", "Client", "ClientClosed", "Failure", "ProblemError", "QueueFull",
           "TallyError", "UnsentEvents"]
