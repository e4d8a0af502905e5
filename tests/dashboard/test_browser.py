"""The dashboard (issue 19) in a real browser: headless Chromium driven by Selenium.

One ``run.py serve`` subprocess (on a copy of the session's PostgreSQL template) and
one browser serve the whole module; each test loads the page afresh, which forgets
the token (it lives in a JS closure only).  Every sync point is an explicit wait
that raises on timeout (``WebDriverWait``, ``until_sync``), never a sleep.

Without ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (or ``selenium``) the
tests skip, saying why — unless ``DASHBOARD_BROWSER_REQUIRED=1`` (CI sets it after
installing Debian's ``chromium chromium-driver``), when they fail.

The console is read after every test (``driver.get_log("browser")``, which drains
it) and kept; the last test asserts that no flow logged an error, except the HTTP
statuses a test provoked on purpose (Chromium logs a 401 or 403 answer to a fetch
as a SEVERE "Failed to load resource" line).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg2
import pytest

from harness.server import ServeProcess
from server.access.auth import hash_token
from tests.support import call, copy_cluster, queue_state, served, until_sync

REQUIRED = os.environ.get("DASHBOARD_BROWSER_REQUIRED") == "1"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 15  # one poll is 1.5 s and the summary is cached 1 s: a view changes within ~3 s
POLL_S = 1.5  # app.js's POLL_MS
DENIED = "That token was not accepted: it is wrong or has been revoked."


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            found = shutil.which(Path(path).name)
            hint = f" ({found} is on PATH, but the tests use Debian's {path})" if found else ""
            return f"{path} is missing{hint}: apt-get install chromium chromium-driver"
    return None


MISSING = _missing()
if MISSING and REQUIRED:
    pytest.fail(f"DASHBOARD_BROWSER_REQUIRED=1 but {MISSING}", pytrace=False)
if MISSING:
    pytest.skip(f"{MISSING} (DASHBOARD_BROWSER_REQUIRED=1 makes this a failure)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.timeout(120)

# SEVERE console entries no test expected, by test; filled after each test.
UNEXPECTED: list[tuple[str, dict]] = []
_STATUS = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")


# --- fixtures ---------------------------------------------------------------------------

def png(width: int, height: int) -> bytes:
    """A real (grey) PNG image, so that the browser can decode it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


RUN = "20261201T101500Z"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``RESULTS_DIR`` with one benchmark run, as the harness writes one."""
    root = tmp_path_factory.mktemp("results")
    folder = root / "smoke" / RUN
    folder.mkdir(parents=True)
    (folder / "summary.json").write_bytes(orjson.dumps({
        "scenario": "smoke", "created": RUN, "scale": 0.5, "paths": ["naive", "pipelined"],
        "comparison": {"headline": {"naive": {"accepted points/s": 1240.3},
                                    "pipelined": {"accepted points/s": 5120.0}}},
        "thresholds": [{"passed": True}] * 3 + [{"passed": False}]}))
    (folder / "latency.png").write_bytes(png(40, 20))
    (folder / "throughput.png").write_bytes(png(60, 30))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pg_template: Path, results: Path
           ) -> Iterator[ServeProcess]:
    """``run.py serve`` for the module: a point that fails is dead-lettered at its first
    attempt, a revoked token stops working within a second, and the benchmark runs are
    ``results``'s."""
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    copy_cluster(pg_template, data_dir)
    with served(data_dir, env={"QUEUE_MAX_ATTEMPTS": "1", "AUTH_CACHE_TTL_S": "1",
                               "RESULTS_DIR": str(results)}) as proc:
        yield proc
        # A graceful stop: serve stops the embedded stores it started.  (``served``'s
        # own stop of PostgreSQL after a kill does not work as root: the stop is run
        # as root, which pg_ctl refuses, and the postmaster outlives the test run.)
        assert proc.terminate(60) == 0, "".join(proc.output[-20:])


def _sql(server: ServeProcess, query: str, *params: Any) -> list[tuple]:
    with psycopg2.connect(server.database_url) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


def new_token(server: ServeProcess, role: str, name: str) -> str:
    """A token stored as ``run.py token create`` stores one (its hash only)."""
    token = "pts_" + secrets.token_urlsafe(32)
    _sql(server, "INSERT INTO api_tokens (token_hash, role, name) VALUES (%s, %s, %s)",
         hash_token(token), role, name)
    return token


@pytest.fixture(scope="module")
def admin(server: ServeProcess) -> str:
    return server.admin_token


@pytest.fixture(scope="module")
def reader(server: ServeProcess) -> str:
    return new_token(server, "read", "dashboard-reader")


def competition(server: ServeProcess, token: str, slug: str, names: list[str],
                name: str | None = None) -> tuple[int, list[int]]:
    """A competition with participants named ``names``; its id and theirs, in order."""
    status, comp = call(server.url, "POST", "/v1/competitions", token,
                        {"slug": slug, "name": name or slug.title()})
    assert status == 201, comp
    status, body = call(server.url, "POST", f"/v1/competitions/{comp['id']}/participants",
                        token, {"participants": [{"external_ref": n, "display_name": n}
                                                 for n in names]})
    assert status == 201, body
    return comp["id"], [p["id"] for p in body["participants"]]


def scored(server: ServeProcess, token: str, slug: str, values: dict[str, float],
           name: str | None = None) -> tuple[int, list[int]]:
    """``competition`` whose participants (``values``' names) each have one committed
    point of their value."""
    cid, ids = competition(server, token, slug, list(values), name=name)
    points = [{"id": f"{slug}-{p}", "competition_id": cid, "participant_id": p, "value": v}
              for p, v in zip(ids, values.values(), strict=True)]
    status, body = call(server.url, "POST", "/v1/points?ack=committed", token,
                        {"points": points})
    assert status == 201, body
    return cid, ids


@pytest.fixture(scope="module")
def comp(server: ServeProcess, admin: str) -> tuple[int, list[int]]:
    return competition(server, admin, "queue", [f"q{i}" for i in range(5)])


@pytest.fixture(scope="module")
def driver(server: ServeProcess) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


class Console:
    """The console errors this test provokes on purpose: HTTP statuses of failed loads,
    and other messages by pattern."""

    def __init__(self) -> None:
        self.allowed: set[int] = set()
        self.patterns: list[re.Pattern[str]] = []

    def allow(self, *statuses: int) -> None:
        self.allowed.update(statuses)

    def allow_message(self, pattern: str) -> None:
        self.patterns.append(re.compile(pattern))

    def expected(self, message: str) -> bool:
        status = _STATUS.search(message)
        return bool(status and int(status[1]) in self.allowed) \
            or any(p.search(message) for p in self.patterns)


@pytest.fixture(autouse=True)
def page(request: pytest.FixtureRequest, driver: WebDriver, server: ServeProcess
         ) -> Iterator[Console]:
    """A fresh page (a reload forgets the token); afterwards its console errors are kept."""
    console = Console()
    driver.get(server.url + "/dashboard")
    wait(driver, lambda d: d.find_element(By.ID, "token").is_displayed(), "the sign-in form")
    yield console
    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE" and not console.expected(entry.get("message", "")):
            UNEXPECTED.append((request.node.name, entry))


# --- helpers ----------------------------------------------------------------------------

def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str,
         timeout_s: float = WAIT_S) -> Any:
    """``condition`` until truthy; raises TimeoutException naming ``what``."""
    def check(d: WebDriver) -> Any:
        try:
            return condition(d)
        except StaleElementReferenceException:  # re-rendered under us: ask again
            return False

    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(
        check, message=f"waiting for {what}")


def by_testid(driver: WebDriver, testid: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def text(driver: WebDriver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def number(driver: WebDriver, element_id: str) -> int | None:
    shown = text(driver, element_id).replace(",", "")
    return int(shown) if shown.isdigit() else None


def sign_in(driver: WebDriver, token: str) -> None:
    """Type the token, press Enter, wait for the queue's figures."""
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token, Keys.ENTER)
    wait(driver, lambda d: d.find_element(By.ID, "app").is_displayed(), "the signed-in views")
    wait(driver, lambda d: number(d, "q-depth") is not None, "a queue depth on the page")


def listed(driver: WebDriver, cid: int) -> WebElement:
    """The competitions view, and the button of competition ``cid`` in its list."""
    show(driver, "competitions")
    return wait(driver, lambda d: d.find_elements(
        By.CSS_SELECTOR, f'[data-testid="competition"][data-cid="{cid}"]'),
        "the competition listed")[0]


def show(driver: WebDriver, view: str) -> None:
    driver.find_element(By.ID, f"tab-{view}").click()
    wait(driver, lambda d: d.find_element(By.ID, f"view-{view}").is_displayed(),
         f"the {view} view")


def chart_peak(driver: WebDriver, chart: str) -> float:
    """How high the chart's line goes, as a fraction of its height (0: a flat zero)."""
    points = driver.execute_script(
        "const l = document.querySelector(arguments[0] + ' polyline');"
        "return l ? l.getAttribute('points') : '';", f"#{chart}")
    ys = [float(pair.split(",")[1]) for pair in points.split()]
    return max((98 - y) / 94 for y in ys) if ys else 0.0


def committed(server: ServeProcess, token: str, cid: int, point_id: str) -> bool:
    return call(server.url, "GET", f"/v1/competitions/{cid}/points/{point_id}", token)[0] == 200


# The page's fetch, wrapped (app.js calls the global ``fetch``): each request's path and
# whether it had an abort signal are logged; ``__hold[prefix] = n`` holds the next n
# requests whose path starts with ``prefix`` (asked now, answered when the test calls
# ``__held[i].release()``; the request's own signal still aborts it); ``__held[i].read``
# turns true once the page has read the released answer's body (the page's handling of
# it is then done: it runs in the microtasks that follow, before the test's next
# script); ``__edit``, when set, rewrites the next summary's JSON.
FAKE_FETCH = """
if (!window.__held) {
  const real = window.fetch.bind(window);
  window.__held = [];
  window.__hold = {};
  window.__requests = [];
  window.__edit = null;
  window.fetch = (url, init) => {
    const path = new URL(url, location.href).pathname;
    window.__requests.push({path, signal: Boolean(init && init.signal)});
    let answer = real(url, init);
    if (window.__edit && path === '/v1/dashboard/summary') {
      const edit = window.__edit;
      window.__edit = null;
      answer = answer.then(async (r) => new Response(JSON.stringify(edit(await r.json())),
        {status: r.status, headers: r.headers}));
    }
    const prefix = Object.keys(window.__hold).find(p => path.startsWith(p) && window.__hold[p] > 0);
    if (prefix === undefined) return answer;
    window.__hold[prefix] -= 1;
    answer.catch(() => {});  // aborted while held: no unhandled rejection
    return new Promise((resolve, reject) => {
      const held = {path, read: false};
      held.release = () => answer.then((r) => {
        const json = r.json.bind(r);
        r.json = () => json().finally(() => { held.read = true; });
        resolve(r);
      }, reject);
      window.__held.push(held);
      const signal = init && init.signal;
      if (signal) signal.addEventListener('abort', () => reject(signal.reason));
    });
  };
}
"""


def fake_fetch(driver: WebDriver) -> None:
    driver.execute_script(FAKE_FETCH)


def hold(driver: WebDriver, prefix: str) -> None:
    """Hold the next request under ``prefix`` and wait until one is held.  The page is
    told it is visible (it is), which makes it poll now rather than at the next tick."""
    held = driver.execute_script("return window.__held.length")
    driver.execute_script("window.__hold[arguments[0]] = 1;"
                          "document.dispatchEvent(new Event('visibilitychange'))", prefix)
    wait(driver, lambda d: d.execute_script("return window.__held.length") > held,
         f"a request to {prefix} held")


def release(driver: WebDriver) -> None:
    """Answer the first request held; wait until the page has read the answer."""
    driver.execute_script("window.__held[0].release()")
    wait(driver, lambda d: d.execute_script("return window.__held[0].read"),
         "the held answer read")


def requests_to(driver: WebDriver, path: str) -> int:
    return driver.execute_script(
        "return window.__requests.filter(r => r.path === arguments[0]).length", path)


def nothing_shown(driver: WebDriver) -> dict[str, Any]:
    """What the signed-out page still shows of the last session (all empty when none)."""
    return driver.execute_script("""
        const text = s => Array.from(document.querySelectorAll(s), n => n.textContent.trim())
          .filter(t => t && t !== '–');
        const rows = s => document.querySelectorAll(s).length;
        const shown = s => Array.from(document.querySelectorAll(s)).filter(n => !n.hidden)
          .map(n => n.id);
        return {figures: text('#app dl.figures dd, #app .chart .now, #dlq-count'),
                labels: text('#tab-dlq-count, #leaderboard-title, #leaderboard-as-of, #as-of,'
                             + ' #viewer-role, #dlq-page, #max-accepted, #max-depth'),
                lists: rows('#competitions li, #leaderboard-body tr, #runs article,'
                            + ' #dlq-body tr, #tasks-body tr, #stores article, #counters div,'
                            + ' #chart-depth polyline'),
                panes: shown('#leaderboard, #dlq-admin, #dlq-table, #queue-controls button')};
        """)


NOTHING = {"figures": [], "labels": [], "lists": 0, "panes": []}


# --- tests ------------------------------------------------------------------------------

def test_an_admin_signs_in_by_typing_the_token_and_pressing_enter(
        driver: WebDriver, server: ServeProcess, admin: str) -> None:
    assert not driver.find_element(By.ID, "app").is_displayed()
    # The token is no password for the browser to offer to keep (see index.html).
    field = driver.find_element(By.ID, "token")
    assert field.get_attribute("autocomplete") == "off"
    assert driver.find_element(By.ID, "signin-form").get_attribute("autocomplete") == "off"
    sign_in(driver, admin)
    assert not driver.find_element(By.ID, "signin").is_displayed()
    assert number(driver, "q-depth") == 0
    for figure in ("q-inflight", "q-retry", "q-dead"):
        assert number(driver, figure) is not None, figure
    assert text(driver, "q-paused") == "Running"
    assert text(driver, "q-path") in ("naive", "pipelined")
    assert "admin" in text(driver, "viewer-role")
    assert driver.find_element(By.ID, "pause").is_displayed()
    assert driver.find_element(By.ID, "resume").is_displayed()
    assert driver.current_url == server.url + "/dashboard"  # no native submission
    # The next ticks draw the depth chart: one line over the last two minutes.
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-depth polyline"),
         "the depth chart's line")
    # The tabs are buttons, the selected one focused; arrow keys move between them.
    tab = driver.switch_to.active_element
    assert tab.get_attribute("id") == "tab-queue" and tab.tag_name == "button"
    tab.send_keys(Keys.ARROW_RIGHT)
    wait(driver, lambda d: d.find_element(By.ID, "view-workers").is_displayed(),
         "the workers view by keyboard")
    assert driver.find_element(By.ID, "tab-workers").get_attribute("aria-selected") == "true"
    assert driver.find_element(By.ID, "tab-queue").get_attribute("aria-selected") == "false"
    assert driver.switch_to.active_element.get_attribute("id") == "tab-workers"
    wait(driver, lambda d: by_testid(d, "task"), "the worker tasks listed")


def test_pause_lets_the_depth_rise_to_the_points_sent_and_resume_drains_it(
        driver: WebDriver, server: ServeProcess, admin: str,
        comp: tuple[int, list[int]]) -> None:
    cid, parts = comp
    sign_in(driver, admin)
    try:
        _pause_fill_and_resume(driver, server, admin, cid, parts)
    finally:  # whatever happened, the next tests find the queue claiming
        assert call(server.url, "POST", "/v1/admin/queue/resume", admin)[0] == 200


def _pause_fill_and_resume(driver: WebDriver, server: ServeProcess, admin: str, cid: int,
                           parts: list[int]) -> None:
    driver.find_element(By.ID, "pause").click()
    wait(driver, lambda d: text(d, "action-result").startswith("Paused"), "'Paused' said")
    assert queue_state(server.url, admin)["paused"] is True
    wait(driver, lambda d: text(d, "q-paused") == "Paused", "the queue shown paused")

    points = [{"id": f"pause-{i}", "competition_id": cid, "participant_id": parts[i % 5],
               "value": 1} for i in range(300)]
    status, body = call(server.url, "POST", "/v1/points", admin, {"points": points})
    assert status == 202, body
    wait(driver, lambda d: number(d, "q-depth") == 300, "the depth to reach the 300 sent")
    # accepted/s from the deltas of totals.enqueued: the line leaves the floor.
    # A rate just above a scale step draws at ~half height (y is rounded to 0.1 unit).
    wait(driver, lambda d: chart_peak(d, "chart-accepted") >= 0.45, "accepted/s to rise")
    assert chart_peak(driver, "chart-committed") == 0  # paused: nothing committed

    driver.find_element(By.ID, "resume").click()
    wait(driver, lambda d: text(d, "action-result").startswith("Resumed"), "'Resumed' said")
    wait(driver, lambda d: number(d, "q-depth") == 0, "the depth to fall to 0")
    wait(driver, lambda d: text(d, "q-paused") == "Running", "the queue shown running")
    wait(driver, lambda d: chart_peak(d, "chart-committed") >= 0.45, "committed/s to rise")
    assert queue_state(server.url, admin)["paused"] is False


def _next_participant_id(server: ServeProcess) -> int:
    ((last, called),) = _sql(server, "SELECT last_value, is_called FROM participants_id_seq")
    return last + 1 if called else last


def _dead_letter(server: ServeProcess, token: str, cid: int, point_id: str,
                 participant: int) -> str:
    """A point of a participant that does not exist, dead-lettered; its DLQ key."""
    point = {"id": point_id, "competition_id": cid, "participant_id": participant, "value": 5}
    status, body = call(server.url, "POST", "/v1/points", token, point)
    assert status == 202, body
    key = f"{cid}:{point_id}"

    def listed() -> bool:
        status, page = call(server.url, "GET", "/v1/admin/dlq?limit=1000", token)
        assert status == 200, page
        return any(item["key"] == key for item in page["items"])

    until_sync(listed, f"{key} dead-lettered", timeout_s=WAIT_S)
    return key


def _row(driver: WebDriver, key: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, f'tr[data-testid="dlq-row"][data-key="{key}"]')


def test_a_dead_letter_is_listed_with_its_reason_and_its_requeue_commits_it(
        driver: WebDriver, server: ServeProcess, admin: str,
        comp: tuple[int, list[int]]) -> None:
    cid, _ = comp
    ghost = _next_participant_id(server)  # not there yet: unknown_participant
    key = _dead_letter(server, admin, cid, "ghost-1", ghost)
    sign_in(driver, admin)
    show(driver, "dlq")
    wait(driver, lambda d: _row(d, key), f"the row of {key}")
    row = _row(driver, key)[0]
    assert row.find_element(By.CSS_SELECTOR, '[data-testid="dlq-reason"]').text \
        == "unknown_participant"
    wait(driver, lambda d: number(d, "dlq-count") == 1, "the summary's dead count at 1")

    # The fix: the participant now exists (it takes the id the point names).
    _, (made,) = competition_participant(server, admin, cid, "ghost")
    assert made == ghost
    _row(driver, key)[0].find_element(By.CSS_SELECTOR, '[data-testid="dlq-requeue"]').click()
    wait(driver, lambda d: text(d, "action-result") == "Requeued 1", "'Requeued 1' said")
    until_sync(lambda: committed(server, admin, cid, "ghost-1"), "the requeued point committed",
               timeout_s=WAIT_S)
    wait(driver, lambda d: not _row(d, key), "the row gone")
    wait(driver, lambda d: d.find_element(By.ID, "dlq-empty").is_displayed()
         and text(d, "dlq-empty") == "No dead letters", "'No dead letters'")
    wait(driver, lambda d: number(d, "dlq-count") == 0, "the dead count at 0")


def competition_participant(server: ServeProcess, token: str, cid: int, name: str
                            ) -> tuple[int, list[int]]:
    status, body = call(server.url, "POST", f"/v1/competitions/{cid}/participants", token,
                        {"participants": [{"external_ref": name, "display_name": name}]})
    assert status == 201, body
    return cid, [p["id"] for p in body["participants"]]


def test_a_purge_asks_in_the_page_first_and_escape_keeps_the_entry(
        driver: WebDriver, server: ServeProcess, admin: str,
        comp: tuple[int, list[int]]) -> None:
    cid, _ = comp
    key = _dead_letter(server, admin, cid, "ghost-2", 10**12)
    sign_in(driver, admin)
    show(driver, "dlq")
    wait(driver, lambda d: _row(d, key), f"the row of {key}")
    dialog = driver.find_element(By.ID, "confirm")

    def purge() -> None:
        _row(driver, key)[0].find_element(By.CSS_SELECTOR, '[data-testid="dlq-purge"]').click()
        wait(driver, lambda d: dialog.get_attribute("open") is not None, "the confirmation")
        assert key in text(driver, "confirm-text")
        # The safe choice has the focus: Enter or Space would cancel.
        assert driver.switch_to.active_element == driver.find_element(By.ID, "confirm-cancel")

    purge()
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait(driver, lambda d: dialog.get_attribute("open") is None, "the confirmation closed")
    assert _row(driver, key) and text(driver, "action-result") == ""
    purge()
    driver.find_element(By.ID, "confirm-ok").click()
    wait(driver, lambda d: text(d, "action-result") == "Purged 1", "'Purged 1' said")
    wait(driver, lambda d: not _row(d, key), "the row gone")
    status, page = call(server.url, "GET", "/v1/admin/dlq", admin)
    assert status == 200 and all(item["key"] != key for item in page["items"]), page


def test_a_competitions_leaderboard_shows_its_participants_in_order(
        driver: WebDriver, server: ServeProcess, admin: str) -> None:
    cid, (_, bravo, _) = scored(server, admin, "board",
                                {"alpha": 20, "bravo": 10, "charlie": 30})
    sign_in(driver, admin)
    listed(driver, cid).click()

    def names(d: WebDriver) -> list[str]:
        return [e.text for e in by_testid(d, "lb-name")]

    wait(driver, lambda d: names(d) == ["charlie", "alpha", "bravo"], "the leaderboard in order")
    # Live: bravo overtakes, and the shown leaderboard follows on a later tick.
    status, body = call(server.url, "POST", "/v1/points?ack=committed", admin,
                        {"id": "b-more", "competition_id": cid, "participant_id": bravo,
                         "value": 50})
    assert status == 201, body
    wait(driver, lambda d: names(d) == ["bravo", "charlie", "alpha"], "the new order shown")


def test_benchmark_runs_show_their_figures_and_charts_fetched_with_the_token(
        driver: WebDriver, admin: str, page: Console) -> None:
    page.allow_message(r"^blob:\S+ - Failed to load resource: net::ERR_FILE_NOT_FOUND$")
    sign_in(driver, admin)
    show(driver, "runs")
    card = wait(driver, lambda d: d.find_elements(
        By.CSS_SELECTOR, f'[data-testid="run"][data-run="smoke/{RUN}"]'), "the run")[0]
    assert "smoke" in card.text and "scale 0.5" in card.text and "naive, pipelined" in card.text
    assert "1,240" in card.text and "5,120" in card.text
    assert card.find_element(By.CSS_SELECTOR, '[data-testid="run-thresholds"]').text \
        == "Thresholds: 3 passed, 1 failed"

    def charts(d: WebDriver) -> list[dict]:
        return d.execute_script(
            "return Array.from(document.querySelectorAll('[data-testid=run-chart]'), i =>"
            " ({src: i.getAttribute('src') || '', width: i.complete ? i.naturalWidth : 0}));")

    wait(driver, lambda d: sorted(c["width"] for c in charts(d)) == [40, 60]
         and all(c["src"].startswith("blob:") for c in charts(d)),
         "both charts drawn from blob URLs")
    urls = [c["src"] for c in charts(driver)]

    def loads(url: str) -> bool:
        return driver.execute_async_script(
            "const done = arguments[arguments.length - 1], image = new Image();"
            "image.onload = () => done(true); image.onerror = () => done(false);"
            "image.src = arguments[0];", url)

    assert all(loads(url) for url in urls)
    driver.find_element(By.ID, "sign-out").click()
    wait(driver, lambda d: d.find_element(By.ID, "signin").is_displayed(), "signed out")
    # Signing out revokes the object URLs: the charts are gone from memory.
    assert not any(loads(url) for url in urls)


def test_a_read_token_sees_the_views_but_no_mutating_buttons_and_a_forged_pause_is_refused(
        driver: WebDriver, server: ServeProcess, admin: str, reader: str,
        page: Console) -> None:
    page.allow(403)  # the forged request's answer, logged by Chromium
    sign_in(driver, reader)
    assert "read" in text(driver, "viewer-role")
    mutating = ("pause", "resume", "dlq-requeue", "dlq-purge", "dlq-requeue-all",
                "dlq-purge-all", "confirm-ok")
    for view in ("queue", "workers", "dlq", "competitions", "runs"):
        show(driver, view)
        present = [t for t in mutating if any(e.is_displayed() for e in by_testid(driver, t))]
        assert present == [], f"{view}: {present}"
    assert not by_testid(driver, "pause") and not by_testid(driver, "resume")
    assert not by_testid(driver, "dlq-requeue-all") and not by_testid(driver, "dlq-purge-all")
    show(driver, "dlq")
    assert driver.find_element(By.ID, "dlq-needs-admin").is_displayed()
    assert "admin token" in text(driver, "dlq-needs-admin")
    assert not driver.find_element(By.ID, "dlq-admin").is_displayed()

    # A forged request from the page itself, with the read token: refused.
    status = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/v1/admin/queue/pause', {method: 'POST',"
        "  headers: {Authorization: 'Bearer ' + arguments[0]}})"
        "  .then(r => done(r.status), e => done(String(e)));", reader)
    assert status == 403
    assert queue_state(server.url, admin)["paused"] is False
    show(driver, "queue")
    wait(driver, lambda d: text(d, "q-paused") == "Running", "the queue shown claiming")


def test_a_wrong_token_is_told_so_and_stays_on_the_sign_in_form(
        driver: WebDriver, server: ServeProcess, page: Console) -> None:
    page.allow(401)
    field = driver.find_element(By.ID, "token")
    field.send_keys("pts_" + secrets.token_urlsafe(32), Keys.ENTER)
    wait(driver, lambda d: text(d, "signin-message") == DENIED, "the refusal in words")
    assert field.is_displayed() and field.get_attribute("value") == ""
    assert not driver.find_element(By.ID, "app").is_displayed()
    assert driver.current_url == server.url + "/dashboard"


def test_a_token_revoked_mid_session_sends_the_page_back_to_sign_in(
        driver: WebDriver, server: ServeProcess, page: Console) -> None:
    page.allow(401)
    token = new_token(server, "read", "dashboard-revoked")
    sign_in(driver, token)
    _sql(server, "UPDATE api_tokens SET revoked_at = now() WHERE name = %s",
         "dashboard-revoked")
    wait(driver, lambda d: d.find_element(By.ID, "signin").is_displayed(),
         "the sign-in form again")
    assert text(driver, "signin-message") == DENIED
    assert not driver.find_element(By.ID, "app").is_displayed()
    assert not by_testid(driver, "pause")


def test_polling_goes_on_after_a_sign_out_and_in_during_a_slow_poll(
        driver: WebDriver, admin: str) -> None:
    sign_in(driver, admin)
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-depth polyline"),
         "a tick drawn")
    fake_fetch(driver)
    hold(driver, "/v1/dashboard/summary")  # the old session's poll hangs
    driver.find_element(By.ID, "sign-out").click()
    wait(driver, lambda d: d.find_element(By.ID, "signin").is_displayed(), "signed out")
    # Nothing of the session stays on the page for the next user.
    assert nothing_shown(driver) == NOTHING
    before = requests_to(driver, "/v1/dashboard/summary")
    sign_in(driver, admin)  # its check is one more summary request
    # The new session polls although the old session's request is still in flight.
    wait(driver, lambda d: requests_to(d, "/v1/dashboard/summary") >= before + 2,
         "the new session's first poll")
    shown = text(driver, "as-of")
    release(driver)
    wait(driver, lambda d: text(d, "as-of") != shown, "the next summary shown")
    assert all(r["signal"] for r in driver.execute_script("return window.__requests"))


def test_a_poll_that_hangs_times_out_as_unreachable_and_the_view_is_marked_stale(
        driver: WebDriver, reader: str) -> None:
    sign_in(driver, reader)
    assert not driver.find_element(By.ID, "stale").is_displayed()
    fake_fetch(driver)
    # Shortened here (the page asks for 4 polls, 6 s) so that the test is quick; and the
    # page's clock moved on by a minute: the last good summary is that old.
    driver.execute_script("""
        const timeout = AbortSignal.timeout.bind(AbortSignal);
        window.__timeouts = [];
        AbortSignal.timeout = ms => {
          window.__timeouts.push(ms);
          return timeout(Math.min(ms, 300));
        };
        const now = performance.now.bind(performance);
        performance.now = () => now() + 60000;""")
    hold(driver, "/v1/dashboard/summary")  # held, never released
    wait(driver, lambda d: d.find_element(By.ID, "stale").is_displayed(), "'stale' shown")
    assert text(driver, "stale").startswith("stale")
    wait(driver, lambda d: text(d, "banner").startswith("Server unreachable"),
         "the timed-out poll reported")
    # The next poll answers: the banner and the marker go.
    wait(driver, lambda d: not d.find_element(By.ID, "banner").is_displayed()
         and not d.find_element(By.ID, "stale").is_displayed(), "fresh figures again")
    assert set(driver.execute_script("return window.__timeouts")) == {6000}
    # A summary with a part unavailable (a store down) names it.
    driver.execute_script("window.__edit = b => ({...b, queue: null, unavailable: ['queue']})")
    wait(driver, lambda d: "Not available now: queue." in text(d, "banner"),
         "the unavailable part named")
    assert driver.find_element(By.ID, "queue-unavailable").is_displayed()
    assert text(driver, "q-depth") == "–"


def _visibility(driver: WebDriver, hidden: bool) -> float:
    """Tell the page it is hidden (or visible again); the page's clock then."""
    return driver.execute_script("""
        if (arguments[0]) {
          Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
          Object.defineProperty(document, 'visibilityState',
                                {configurable: true, get: () => 'hidden'});
        } else {
          delete document.hidden;
          delete document.visibilityState;
        }
        const at = performance.now();
        document.dispatchEvent(new Event('visibilitychange'));
        return at;""", hidden)


def _summaries_since(driver: WebDriver, at: float) -> int:
    return driver.execute_script(
        "return performance.getEntriesByType('resource').filter(e =>"
        " e.name.endsWith('/v1/dashboard/summary') && e.startTime >= arguments[0]).length", at)


def test_polling_pauses_while_the_tab_is_hidden_and_resumes_when_shown(
        driver: WebDriver, reader: str) -> None:
    sign_in(driver, reader)
    hidden_at = _visibility(driver, True)
    # A poll interval and more without a summary request (the tick due within POLL_S did
    # not fire): this wait is expected to time out.
    with pytest.raises(TimeoutException):
        wait(driver, lambda d: _summaries_since(d, hidden_at), "no poll while hidden",
             timeout_s=POLL_S + 0.5)
    shown_at = _visibility(driver, False)
    wait(driver, lambda d: _summaries_since(d, shown_at), "a poll once shown",
         timeout_s=POLL_S + 1)


def test_a_phone_sized_window_shows_the_tabs_and_tiles_without_sideways_scrolling(
        driver: WebDriver, admin: str) -> None:
    driver.set_window_size(390, 844)
    try:
        wait(driver, lambda d: d.execute_script("return innerWidth") <= 390, "a narrow window")
        sign_in(driver, admin)
        for tab in driver.find_elements(By.CSS_SELECTOR, "[role=tab]"):
            assert tab.is_displayed(), tab.get_attribute("id")
        tiles = driver.find_elements(By.CSS_SELECTOR, "#view-queue dl.figures > div")
        assert len(tiles) == 8 and all(t.is_displayed() for t in tiles)
        for view in ("queue", "workers", "dlq", "competitions", "runs"):
            show(driver, view)
            widths = driver.execute_script(
                "return [document.documentElement.scrollWidth, innerWidth]")
            assert widths[0] <= widths[1], f"{view}: {widths}"
    finally:
        driver.set_window_size(1280, 900)


HOSTILE = "<img src=x onerror=alert(1)>"


def test_hostile_names_are_text_and_a_late_leaderboard_answer_is_dropped(
        driver: WebDriver, server: ServeProcess, admin: str) -> None:
    cid, (_, bob) = scored(server, admin, "hostile", {"ann": 20, "bob": 10}, name=HOSTILE)
    sign_in(driver, admin)
    button = listed(driver, cid)
    assert HOSTILE in button.text
    button.click()

    def names(d: WebDriver) -> list[str]:
        return [e.text for e in by_testid(d, "lb-name")]

    wait(driver, lambda d: names(d) == ["ann", "bob"], "the leaderboard")
    assert text(driver, "leaderboard-title") == f"{HOSTILE}: leaderboard"
    assert not driver.find_elements(By.CSS_SELECTOR, "#app img:not([data-chart])")
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 (no alert is open)

    # A tick's load answers late, after a tab click's newer one: it is dropped.
    fake_fetch(driver)
    hold(driver, f"/v1/competitions/{cid}/leaderboard")
    status, body = call(server.url, "POST", "/v1/points?ack=committed", admin,
                        {"id": "h-more", "competition_id": cid, "participant_id": bob,
                         "value": 50})
    assert status == 201, body
    path = f"/v1/competitions/{cid}/leaderboard?limit=20"  # as the page asks (cached)
    until_sync(lambda: [e["display_name"] for e in call(server.url, "GET", path, admin)[1]
                        ["entries"]] == ["bob", "ann"], "bob ahead", timeout_s=WAIT_S)
    show(driver, "queue")
    show(driver, "competitions")
    wait(driver, lambda d: names(d) == ["bob", "ann"], "the newer leaderboard")
    release(driver)
    assert names(driver) == ["bob", "ann"]

    driver.find_element(By.ID, "sign-out").click()
    wait(driver, lambda d: d.find_element(By.ID, "signin").is_displayed(), "signed out")
    assert nothing_shown(driver) == NOTHING


def test_a_next_click_during_a_dead_letter_load_shows_the_next_page(
        driver: WebDriver, server: ServeProcess, admin: str,
        comp: tuple[int, list[int]]) -> None:
    cid, _ = comp
    points = [{"id": f"page-{i}", "competition_id": cid, "participant_id": 10**12,
               "value": 1} for i in range(25)]
    status, body = call(server.url, "POST", "/v1/points", admin, {"points": points})
    assert status == 202, body
    try:
        _page_during_a_load(driver, server, admin, cid)
    finally:
        assert call(server.url, "DELETE", "/v1/admin/dlq", admin, {"all": True})[0] == 200


def _page_during_a_load(driver: WebDriver, server: ServeProcess, admin: str,
                        cid: int) -> None:
    def listing(cursor: str | None = None) -> dict:
        path = "/v1/admin/dlq?limit=20" + (f"&cursor={cursor}" if cursor else "")
        status, page = call(server.url, "GET", path, admin)
        assert status == 200, page
        return page

    until_sync(lambda: sum(i["key"].startswith(f"{cid}:page-")
                           for i in listing(None).get("items", [])) > 0
               and len(call(server.url, "GET", "/v1/admin/dlq?limit=1000", admin)[1]["items"])
               >= 25, "the 25 points dead-lettered", timeout_s=WAIT_S)
    first = listing()
    second = listing(first["next_cursor"])
    page1 = [i["key"] for i in first["items"]]
    page2 = [i["key"] for i in second["items"]]
    assert len(page1) == 20 and page2 and second["next_cursor"] is None

    def rows(d: WebDriver) -> list[str]:
        return [r.get_attribute("data-key") for r in by_testid(d, "dlq-row")]

    sign_in(driver, admin)
    show(driver, "dlq")
    wait(driver, lambda d: rows(d) == page1, "page 1")
    wait(driver, lambda d: number(d, "dlq-count") == 25, "the summary's dead count")
    fake_fetch(driver)
    show(driver, "queue")
    driver.execute_script("window.__hold['/v1/admin/dlq'] = 1")
    show(driver, "dlq")  # page 1 asked again: held
    wait(driver, lambda d: d.execute_script("return window.__held.length") == 1, "a load held")
    driver.find_element(By.ID, "dlq-next").click()
    wait(driver, lambda d: rows(d) == page2 and text(d, "dlq-page") == "Page 2", "page 2")
    release(driver)
    assert rows(driver) == page2 and text(driver, "dlq-page") == "Page 2"
    assert driver.find_element(By.ID, "dlq-next").get_attribute("disabled") is not None
    driver.find_element(By.ID, "dlq-prev").click()
    wait(driver, lambda d: rows(d) == page1 and text(d, "dlq-page") == "Page 1", "page 1 again")
    driver.find_element(By.ID, "dlq-next").click()
    wait(driver, lambda d: rows(d) == page2, "page 2 again")


def test_no_console_errors_and_the_token_is_kept_nowhere(
        driver: WebDriver, server: ServeProcess, admin: str, reader: str) -> None:
    """Last: the console of every flow before (kept after each test), and this one's."""
    for token in (reader, admin):
        driver.get(server.url + "/dashboard")
        wait(driver, lambda d: d.find_element(By.ID, "token").is_displayed(), "the form")
        sign_in(driver, token)
        for view in ("workers", "dlq", "competitions", "runs", "queue"):
            show(driver, view)
        # A tick or two after every view was shown.
        shown = text(driver, "as-of")
        wait(driver, lambda d, shown=shown: text(d, "as-of") != shown, "another tick")
        kept = driver.execute_script(
            "const dump = s => JSON.stringify(Object.entries(s));"
            "return {url: location.href, cookie: document.cookie,"
            "        local: dump(localStorage), session: dump(sessionStorage),"
            "        name: window.name, history: String(history.state),"
            "        html: document.documentElement.outerHTML,"
            "        resources: performance.getEntries().map(e => e.name).join(' ')};")
        for where, value in kept.items():
            assert token not in value, f"the token is in {where}"
        assert kept["cookie"] == "" and kept["local"] == "[]" and kept["session"] == "[]"
        assert driver.find_element(By.ID, "token").get_attribute("value") == ""
        driver.find_element(By.ID, "sign-out").click()
        wait(driver, lambda d: d.find_element(By.ID, "signin").is_displayed(), "signed out")
    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE":
            UNEXPECTED.append(("test_no_console_errors_and_the_token_is_kept_nowhere", entry))
    assert not UNEXPECTED, "console errors:\n" + "\n".join(
        f"{test}: {entry['message']}" for test, entry in UNEXPECTED)
