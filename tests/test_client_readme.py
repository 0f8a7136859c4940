"""The README's "Count from your code" snippets, run as written against a real `tally serve`.

Only the address changes: the test server listens on a free port, not 8080.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import requests

from tests.test_api_support import READ, WRITE, R, gunicorn

README = Path(__file__).resolve().parent.parent / "README.md"
DEFAULT_URL = "http://127.0.0.1:8080"


def snippet(language: str) -> str:
    """The first `language` code block of the README's "Count from your code" section."""
    section = README.read_text().split("## Count from your code\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_the_python_and_curl_snippets_count_and_read(redis_url, redis_client, tmp_path):
    (tmp_path / ".tally").mkdir()
    (tmp_path / ".tally" / "tokens.env").write_text(
        f"TALLY_WRITE_TOKENS={WRITE}\nTALLY_READ_TOKENS={READ}\n")
    env = {**os.environ, "TALLY_WRITE_TOKENS": WRITE, "TALLY_READ_TOKENS": READ}
    with gunicorn(redis_url, 1, tmp_path) as (base, _):
        python = subprocess.run([sys.executable, "-c", snippet("python").replace(
            DEFAULT_URL, base)], env=env, cwd=tmp_path, capture_output=True, text=True,
            timeout=60)
        assert (python.returncode, python.stderr) == (0, "")
        expected = re.search(r"# (\{.*\})", snippet("python")).group(1)
        assert python.stdout == expected + "\n"
        curl = snippet("sh")
        shell = subprocess.run(["bash", "-c", curl.replace(DEFAULT_URL, base)], cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
        plays = requests.get(f"{base}/v1/counters/plays", params={"key": "song:1"},
                             headers=R, timeout=10).json()["total"]
    assert shell.returncode == 0, shell.stderr
    answers = shell.stdout.split("\n")
    assert answers[0] == '{"accepted":1,"duplicates":0}'
    assert answers[1] == curl.rstrip().splitlines()[-1].removeprefix("# ")
    assert plays == 3
