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
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
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


def competition(server: ServeProcess, token: str, slug: str, names: list[str]
                ) -> tuple[int, list[int]]:
    """A competition with participants named ``names``; its id and theirs, in order."""
    status, comp = call(server.url, "POST", "/v1/competitions", token,
                        {"slug": slug, "name": slug.title()})
    assert status == 201, comp
    status, body = call(server.url, "POST", f"/v1/competitions/{comp['id']}/participants",
                        token, {"participants": [{"external_ref": n, "display_name": n}
                                                 for n in names]})
    assert status == 201, body
    return comp["id"], [p["id"] for p in body["participants"]]


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


# --- tests ------------------------------------------------------------------------------

def test_an_admin_signs_in_by_typing_the_token_and_pressing_enter(
        driver: WebDriver, server: ServeProcess, admin: str) -> None:
    assert not driver.find_element(By.ID, "app").is_displayed()
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
    wait(driver, lambda d: chart_peak(d, "chart-accepted") > 0.5, "accepted/s to rise")
    assert chart_peak(driver, "chart-committed") == 0  # paused: nothing committed

    driver.find_element(By.ID, "resume").click()
    wait(driver, lambda d: text(d, "action-result").startswith("Resumed"), "'Resumed' said")
    wait(driver, lambda d: number(d, "q-depth") == 0, "the depth to fall to 0")
    wait(driver, lambda d: text(d, "q-paused") == "Running", "the queue shown running")
    wait(driver, lambda d: chart_peak(d, "chart-committed") > 0.5, "committed/s to rise")
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
    cid, (alpha, bravo, charlie) = competition(server, admin, "board",
                                               ["alpha", "bravo", "charlie"])
    points = [{"id": f"b-{p}", "competition_id": cid, "participant_id": p, "value": v}
              for p, v in ((alpha, 20), (bravo, 10), (charlie, 30))]
    status, body = call(server.url, "POST", "/v1/points?ack=committed", admin,
                        {"points": points})
    assert status == 201, body
    sign_in(driver, admin)
    show(driver, "competitions")
    button = wait(driver, lambda d: d.find_elements(
        By.CSS_SELECTOR, f'[data-testid="competition"][data-cid="{cid}"]'),
        "the competition listed")[0]
    button.click()

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
