"""Keep passwords out of output: URLs and DSNs are shown with their password replaced."""

from __future__ import annotations

import re

# scheme://user:password@  ->  scheme://user:***@
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)
DSN_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """Return text with the password of every URL or key=value DSN in it masked."""
    text = URL_PASSWORD.sub(lambda m: f"{m['head']}***@", text)
    return DSN_PASSWORD.sub(lambda m: f"{m['head']}***", text)
