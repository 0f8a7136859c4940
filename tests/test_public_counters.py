"""Public counters: a page of an allowed origin counts a view with count.js, in a real Chromium.

The ingest API runs under real gunicorn; the test pages come from other
origins (tiny http.servers on other ports). Pages of origins not allowed,
fields a browser may not set and requests over the per-client limit change
nothing in Redis.
"""

from __future__ import annotations

import functools
import http.server
import re
import threading
import time
import uuid

import pytest
import requests

from tally.errors import ConfigError
from tally.ingest.api.public import load_config
from tally.settings import PROJECT_ROOT, load_settings
from tests.test_api_support import R, gunicorn

LIMIT = 3
README = PROJECT_ROOT / "README.md"


def readme_snippet() -> str:
    """The README's one-line page snippet ("Count from your code"), as written."""
    section = README.read_text().split("## Count from your code\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```html\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Two page servers on other ports (other origins): (allowed origin, other origin, folder)."""
    folder = tmp_path_factory.mktemp("pages")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield *(f"http://127.0.0.1:{s.server_address[1]}" for s in servers), folder
    for server in servers:
        server.shutdown()
        server.server_close()


def _serve(redis_url, tmp_path_factory, pages, **settings):
    allowed, _, folder = pages
    return gunicorn(redis_url, 1, tmp_path_factory.mktemp("serve"), public_counters="pageviews",
                    public_origins=allowed, public_rate_limit=f"{LIMIT}/60", **settings)


@pytest.fixture(scope="module")
def api(redis_url, tmp_path_factory, pages):
    """The API under gunicorn; its base URL. The pages hold the README's snippet for it."""
    with _serve(redis_url, tmp_path_factory, pages) as (base, _):
        page = readme_snippet().replace("http://127.0.0.1:8080", base)
        (pages[2] / "index.html").write_text(f"<!doctype html><title>t</title>\n{page}")
        yield base


def total(base: str, key: str = "/index.html") -> int:
    answer = requests.get(f"{base}/v1/counters/pageviews", params={"key": key}, headers=R,
                          timeout=5)
    return answer.json()["total"]


def refused(base: str, status: int) -> float:
    """How many public posts the API has answered with this status (from /metrics)."""
    text = requests.get(base + "/metrics", timeout=5).text
    found = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line.startswith("tally_ingest_http_requests_total{")
             and 'route="/v1/public/events"' in line and f'status="{status}"' in line]
    return sum(found)


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def post(base: str, event: dict, origin: str, **headers) -> requests.Response:
    return requests.post(base + "/v1/public/events", json=event, timeout=5,
                         headers={"Origin": origin, **headers})


def view(**fields) -> dict:
    return {"counter": "pageviews", "key": "/index.html", "id": uuid.uuid4().hex, **fields}


FETCH = """const done = arguments[arguments.length - 1];
fetch(arguments[0], {method: "POST", headers: {"Content-Type": "application/json"},
                     body: JSON.stringify(arguments[1])})
  .then(r => r.json().then(b => done([r.status, b])), e => done(["blocked", String(e)]));"""


def test_a_page_of_an_allowed_origin_counts_a_view_once_per_load(api, pages, browser,
                                                                 redis_client):
    browser.get(pages[0] + "/index.html")
    wait_for(lambda: total(api) == 1)
    browser.get(pages[0] + "/index.html")
    wait_for(lambda: total(api) == 2)
    # fetch with a JSON body: a CORS preflight, then a readable answer
    status, answer = browser.execute_async_script(FETCH, api + "/v1/public/events",
                                                  view(key="/fetched"))
    assert (status, answer) == (200, {"accepted": 1, "duplicates": 0})
    assert total(api, "/fetched") == 1


def test_a_page_of_another_origin_changes_nothing(api, pages, browser, redis_client):
    before = refused(api, 403)
    browser.get(pages[1] + "/index.html")
    wait_for(lambda: refused(api, 403) == before + 1)  # the beacon arrived and was refused
    status, _ = browser.execute_async_script(FETCH, api + "/v1/public/events", view())
    assert status == "blocked"  # its preflight was refused, so nothing was sent
    assert refused(api, 403) == before + 2
    assert total(api) == 0
    assert not redis_client.keys("rl:*")  # not even a rate-limit entry


def test_over_the_limit_is_429_with_retry_after_and_counts_nothing(api, pages, redis_client):
    # X-Forwarded-For is not trusted unless configured: every request is the peer's
    for n in range(LIMIT):
        answer = post(api, view(), pages[0], **{"X-Forwarded-For": f"10.0.0.{n}"})
        assert answer.status_code == 200
    answer = post(api, view(), pages[0], **{"X-Forwarded-For": "10.0.0.99"})
    assert answer.status_code == 429
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert 1 <= int(answer.headers["Retry-After"]) <= 60
    assert answer.headers["Access-Control-Allow-Origin"] == pages[0]
    assert total(api) == LIMIT


def test_behind_a_trusted_proxy_the_limit_is_per_forwarded_address(redis_url, tmp_path_factory,
                                                                   pages, redis_client):
    with _serve(redis_url, tmp_path_factory, pages,
                trusted_proxy_header="X-Forwarded-For") as (base, _):
        for _ in range(LIMIT):
            assert post(base, view(), pages[0], **{"X-Forwarded-For": "10.0.0.1"}).ok
        # the last entry is the one the proxy added: a client's own entries before it are not
        spoofed = {"X-Forwarded-For": "10.9.9.9, 10.0.0.1"}
        assert post(base, view(), pages[0], **spoofed).status_code == 429
        assert post(base, view(), pages[0], **{"X-Forwarded-For": "10.0.0.2"}).ok
        assert total(base) == LIMIT + 1
        # IPv6 clients are limited per /64: another address of the block is the same client
        for n in range(LIMIT):
            assert post(base, view(), pages[0], **{"X-Forwarded-For": f"2001:db8::{n}"}).ok
        assert post(base, view(), pages[0], **{"X-Forwarded-For": "2001:db8::ff"}).status_code \
            == 429
        assert post(base, view(), pages[0], **{"X-Forwarded-For": "2001:db8:0:1::1"}).ok
        answer = post(base, view(), pages[0], **{"X-Forwarded-For": "10.0.0.3, unknown"})
        assert answer.json()["type"] == "urn:tally:problem:invalid-header"
        assert total(base) == 2 * LIMIT + 2


def test_a_resent_event_counts_once(api, pages, redis_client):
    event = view()
    assert post(api, event, pages[0]).json() == {"accepted": 1, "duplicates": 0}
    assert post(api, event, pages[0]).json() == {"accepted": 0, "duplicates": 1}
    assert total(api) == 1


@pytest.mark.parametrize(("event", "status", "problem"), [
    (view(value=1000), 400, "invalid-body"),
    (view(user="someone"), 400, "invalid-body"),
    (view(ts=time.time()), 400, "invalid-body"),
    ({"counter": "pageviews", "key": "/index.html"}, 400, "invalid-body"),
    (view(key=""), 400, "validation"),
    (view(counter="orders"), 403, "counter-not-public"),
])
def test_what_a_browser_may_not_send_changes_nothing(api, pages, redis_client, event, status,
                                                     problem):
    answer = post(api, event, pages[0])
    assert (answer.status_code, answer.json()["type"]) == (status, f"urn:tally:problem:{problem}")
    assert not redis_client.keys("*t:*")  # no counter key at all


def test_preflight_answers_allowed_origins_only(api, pages, redis_client):
    url = api + "/v1/public/events"
    asked = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type"}
    answer = requests.options(url, headers={"Origin": pages[0], **asked}, timeout=5)
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == pages[0]
    assert answer.headers["Access-Control-Allow-Methods"] == "POST"
    answer = requests.options(url, headers={"Origin": pages[1], **asked}, timeout=5)
    assert answer.status_code == 403
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_count_js_is_served_as_javascript(api):
    answer = requests.get(api + "/v1/count.js", timeout=5)
    assert answer.headers["Content-Type"].startswith("text/javascript")
    assert re.search(r"sendBeacon", answer.text)


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("public_origins", ("https://example.com/",), "TALLY_PUBLIC_ORIGINS entry"),
    ("public_counters", ("Page Views",), "TALLY_PUBLIC_COUNTERS entry"),
    ("public_rate_limit", "60", "TALLY_PUBLIC_RATE_LIMIT must be"),
    ("public_rate_limit", "0/60", "TALLY_PUBLIC_RATE_LIMIT must be"),
])
def test_bad_public_settings_stop_startup(setting, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(load_settings({}, **{setting: value}))
