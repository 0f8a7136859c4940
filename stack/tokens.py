"""Bearer tokens for the local stack: the configured ones, else a pair generated once."""

from __future__ import annotations

import os
import secrets

from tally.settings import Settings

TOKENS_FILE = "tokens.env"


def local_tokens(settings: Settings) -> Settings:
    """Return settings with tokens; without configured ones, use <data_dir>/tokens.env.

    The ingest API refuses to run without tokens, and a local stack should be
    secure by default rather than insecure for convenience, so the first
    `tally up` writes a write token and a read token (mode 0600) and every
    later run reuses them.
    """
    if settings.write_tokens or settings.read_tokens:
        return settings
    path = settings.data_dir / TOKENS_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"TALLY_WRITE_TOKENS={secrets.token_urlsafe(24)}\n"
                      f"TALLY_READ_TOKENS={secrets.token_urlsafe(24)}\n")
    values = dict(line.split("=", 1) for line in path.read_text().split())
    return settings.with_(write_tokens=(values["TALLY_WRITE_TOKENS"],),
                          read_tokens=(values["TALLY_READ_TOKENS"],))


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for Tally's own processes: the caller's, plus the stack's tokens."""
    return dict(os.environ, TALLY_WRITE_TOKENS=",".join(settings.write_tokens),
                TALLY_READ_TOKENS=",".join(settings.read_tokens))
