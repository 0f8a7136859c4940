"""Bearer tokens and credentials for the local stack: the configured ones, else generated once.

The ingest API refuses to run without tokens, and a local stack should be
secure by default rather than insecure for convenience, so the first
`tally up` writes tokens and passwords to <data_dir>/tokens.env (mode 0600)
and every later run reuses them (tally.stack.secrets).
"""

from __future__ import annotations

from tally.settings import Settings
from tally.stack.secrets import TOKENS_FILE, child_env, with_secrets

__all__ = ["TOKENS_FILE", "child_env", "local_tokens"]


def local_tokens(settings: Settings) -> Settings:
    """Return settings with tokens and passwords; unset ones come from <data_dir>/tokens.env."""
    return with_secrets(settings)
