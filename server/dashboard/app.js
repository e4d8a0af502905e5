// The live dashboard (issue 19): vanilla ES2020, no build step, no library.
//
// The token lives only in this closure's `token` variable: it is sent as
// `Authorization: Bearer` on fetch and never written to a URL, a cookie,
// localStorage, sessionStorage, the DOM or the console.  A reload asks again.
// The page polls GET /v1/dashboard/summary every POLL_MS (one request per
// tick, none while the tab is hidden) and draws its charts as plain SVG.
"use strict";

(() => {
  const POLL_MS = 1500;
  const REQUEST_TIMEOUT_MS = 4 * POLL_MS; // a half-open connection counts as "unreachable"
  const STALE_MS = 5000; // the shown figures are marked stale once the last good summary is this old
  const GAP_S = (3 * POLL_MS) / 1000; // samples further apart start a new chart segment
  const WINDOW_S = 120; // the charts' span: about two minutes of samples
  const DLQ_LIMIT = 20;
  const LEADERBOARD_LIMIT = 20;
  const DENIED = "That token was not accepted: it is wrong or has been revoked.";
  const SVG = "http://www.w3.org/2000/svg";
  const STORE_NAMES = { postgres: "PostgreSQL", redis: "Redis", replica: "Read replica" };

  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const rateFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

  // --- state (all of it here; the token nowhere else) -------------------------------
  let token = null;
  let role = null;
  let session = 0; // bumped on sign-in and sign-out: answers for an old session are dropped
  let timer = null;
  let tickingSession = null; // the session whose summary request is in flight, if any
  let lastGood = null; // performance.now() when the last good summary arrived
  let view = "queue";
  let samples = []; // {t, depth, accepted, committed, enqueuedTotal, committedTotal}
  let summary = null;
  let selectedCompetition = null;
  let dlqCursors = [null]; // the cursor that opened each page seen so far
  let dlqPage = 0;
  let dlqListedDead = null; // the summary's dead count when the list was last read
  let dlqSeq = 0; // numbers each dead-letter load: only the newest one's answer is shown
  let leaderboardSeq = 0; // likewise for the leaderboard
  let runsKey = "";
  const chartUrls = new Map(); // "scenario/run/chart" -> object URL of its PNG

  // --- small helpers ---------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  }

  function setText(id, text) {
    const node = $(id);
    if (node.textContent !== text) node.textContent = text;
  }

  function fmtInt(n) {
    return typeof n === "number" && Number.isFinite(n) ? numberFormat.format(n) : "–";
  }

  function fmtRate(n) {
    return typeof n === "number" && Number.isFinite(n) ? rateFormat.format(n) : "–";
  }

  function fmtNumber(n) {
    if (typeof n !== "number" || !Number.isFinite(n)) return n === null || n === undefined ? "–" : String(n);
    if (Number.isInteger(n)) return numberFormat.format(n);
    return new Intl.NumberFormat("en-US", { maximumSignificantDigits: 4 }).format(n);
  }

  function fmtSeconds(s) {
    if (typeof s !== "number" || !Number.isFinite(s)) return "–";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  }

  function fmtMs(ms) {
    return typeof ms === "number" && Number.isFinite(ms) ? `${ms.toFixed(ms < 10 ? 1 : 0)} ms` : "–";
  }

  // RFC 3339 with up to microseconds, to seconds since the epoch (a float).
  function parseTime(text) {
    const compact = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/.exec(text || ""); // a run's name
    if (compact) return Date.UTC(+compact[1], +compact[2] - 1, +compact[3], +compact[4], +compact[5], +compact[6]) / 1000;
    const m = /^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$/.exec(text || "");
    if (!m) return NaN;
    let ms = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
    if (m[8] && m[8] !== "Z") {
      const sign = m[8][0] === "-" ? -1 : 1;
      ms -= sign * (+m[8].slice(1, 3) * 60 + +m[8].slice(4, 6)) * 60000;
    }
    return ms / 1000 + (m[7] ? Number(`0.${m[7]}`) : 0);
  }

  function fmtTime(text) {
    const t = parseTime(text);
    if (!Number.isFinite(t)) return text || "–";
    return new Date(t * 1000).toLocaleString();
  }

  function errorText(result) {
    const message = result.body && result.body.error && result.body.error.message;
    return message ? `${result.status}: ${message}` : `HTTP ${result.status}`;
  }

  function retryAfterS(response) {
    const value = Number(response.headers.get("Retry-After"));
    return Number.isFinite(value) && value > 0 ? Math.ceil(value) : 1;
  }

  // --- HTTP --------------------------------------------------------------------------
  // Every call of the page goes through here: the bearer header, no redirect followed,
  // and a timeout (a half-open connection would otherwise hold a poll forever).  Never
  // throws: {status (0: unreachable or timed out), body, retryAfter}.  `as` "blob" reads
  // a 2xx body as a Blob (a chart), otherwise a JSON body is parsed.
  async function request(method, path, body, withToken, as = "json") {
    const headers = { Authorization: `Bearer ${withToken || token}` };
    const init = {
      method, headers, cache: "no-store", credentials: "omit", redirect: "error",
      referrerPolicy: "no-referrer", signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const unreachable = { status: 0, body: null, retryAfter: POLL_MS / 1000 };
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      return unreachable;
    }
    let data = null;
    try {
      if (as === "blob") {
        if (response.ok) data = await response.blob();
      } else if ((response.headers.get("Content-Type") || "").includes("json")) {
        data = await response.json();
      }
    } catch (err) {
      if (err && (err.name === "TimeoutError" || err.name === "AbortError" || err.name === "TypeError")) {
        return unreachable; // the body did not arrive in time, or the connection broke
      }
      data = null; // not JSON after all
    }
    return { status: response.status, body: data, retryAfter: retryAfterS(response) };
  }

  // What an answer other than 2xx means for the whole page.  Returns the delay before
  // the next poll (ms), or null when the session ended (401).
  function trouble(result) {
    if (result.status === 401) {
      signOut(DENIED);
      return null;
    }
    if (result.status === 429) {
      setBanner(`Rate-limited: retrying in ${result.retryAfter} s`, "warn");
      return result.retryAfter * 1000;
    }
    if (result.status === 0) {
      setBanner("Server unreachable: retrying every " + POLL_MS / 1000 + " s", "error");
      return POLL_MS;
    }
    if (result.status === 503) {
      const message = (result.body && result.body.error && result.body.error.message) || "a store is down";
      setBanner(`Service unavailable (${message}): retrying in ${result.retryAfter} s`, "error");
      return Math.max(POLL_MS, result.retryAfter * 1000);
    }
    setBanner(`Unexpected answer from the server (${errorText(result)}): retrying`, "error");
    return POLL_MS;
  }

  function setBanner(text, kind) {
    const banner = $("banner");
    if (!text) {
      banner.hidden = true;
      banner.textContent = "";
      return;
    }
    banner.className = `banner banner-${kind || "error"}`;
    setText("banner", text);
    banner.hidden = false;
  }

  function showResult(text, failed) {
    const node = $("action-result");
    node.className = failed ? "result result-failed" : "result";
    node.textContent = text;
  }

  // --- polling -----------------------------------------------------------------------
  function schedule(delay) {
    clearTimeout(timer);
    timer = null;
    if (token === null || document.hidden) return;
    timer = setTimeout(tick, delay);
  }

  // Whether this session's summary request is in flight.  The guard is the session's,
  // not the page's: an old session's slow request must not hold up the next session's
  // polling (its answer is dropped, and it reschedules nothing).
  function polling() {
    return tickingSession === session;
  }

  async function tick() {
    timer = null;
    if (token === null || document.hidden || polling()) return;
    const mine = session;
    tickingSession = mine;
    let delay = POLL_MS;
    try {
      const result = await request("GET", "/v1/dashboard/summary");
      if (mine !== session) return;
      if (result.status === 200 && result.body) {
        render(result.body);
        await refreshShown(mine);
      } else {
        delay = trouble(result);
      }
    } finally {
      if (tickingSession === mine) tickingSession = null;
      if (mine === session && delay !== null) schedule(delay);
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
    } else if (token !== null && !polling()) {
      tick();
    }
  });

  // The figures on show are marked stale once the last good summary is STALE_MS old
  // (the server unreachable, a slow store, a poll that hangs): checked every second.
  function markStale() {
    const age = token !== null && lastGood !== null ? performance.now() - lastGood : 0;
    const stale = $("stale");
    if (age > STALE_MS) {
      setText("stale", `stale: ${Math.round(age / 1000)} s old`);
      stale.hidden = false;
      $("app").classList.add("is-stale");
    } else if (!stale.hidden) {
      stale.hidden = true;
      $("app").classList.remove("is-stale");
    }
  }
  setInterval(markStale, 1000);

  // What the shown view fetches besides the summary, each tick.
  async function refreshShown(mine) {
    if (view === "competitions" && selectedCompetition !== null) {
      await loadLeaderboard(mine);
    } else if (view === "dlq" && role === "admin") {
      const dead = summary && summary.queue ? summary.queue.dead : null;
      if (dead !== dlqListedDead) await loadDlq();
    } else if (view === "runs") {
      loadCharts();
    }
  }

  // --- sign-in and sign-out ----------------------------------------------------------
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault(); // never a native submission: the token would land in a URL
    const input = $("token");
    const candidate = input.value.trim();
    input.value = "";
    const message = $("signin-message");
    if (!candidate) {
      message.textContent = "Type a token first.";
      input.focus();
      return;
    }
    const submit = $("signin-submit");
    submit.disabled = true;
    message.textContent = "Checking the token…";
    const result = await request("GET", "/v1/dashboard/summary", undefined, candidate);
    submit.disabled = false;
    if (result.status === 200 && result.body && result.body.viewer) {
      message.textContent = "";
      signIn(candidate, result.body);
      return;
    }
    if (result.status === 401) message.textContent = DENIED;
    else if (result.status === 429) message.textContent = `Rate-limited: try again in ${result.retryAfter} s.`;
    else if (result.status === 0) message.textContent = "The server cannot be reached: try again once it is up.";
    else if (result.status === 503) message.textContent = `The server is unavailable (${errorText(result)}): try again in ${result.retryAfter} s.`;
    else message.textContent = `Sign-in failed (${errorText(result)}).`;
    input.focus();
  });

  $("sign-out").addEventListener("click", () => signOut("Signed out."));

  function signIn(newToken, first) {
    token = newToken;
    session += 1;
    role = first.viewer.role;
    forget();
    $("signin").hidden = true;
    $("app").hidden = false;
    $("top-meta").hidden = false;
    showResult("");
    setBanner("");
    buildControls();
    selectView("queue", false);
    render(first);
    $("tab-queue").focus();
    schedule(POLL_MS);
  }

  function signOut(message) {
    token = null;
    role = null;
    session += 1;
    clearTimeout(timer);
    timer = null;
    const dialog = $("confirm");
    if (dialog.open) dialog.close();
    forget();
    $("app").hidden = true;
    $("top-meta").hidden = true;
    $("signin").hidden = false;
    $("signin-message").textContent = message || "";
    $("token").focus();
  }

  // Everything a session read, gone from memory and from the page (the next user of
  // this tab sees nothing of the previous one's): every figure back to "–", every
  // list and table emptied, the per-view notes hidden.
  function forget() {
    for (const url of chartUrls.values()) URL.revokeObjectURL(url);
    chartUrls.clear();
    summary = null;
    samples = [];
    lastGood = null;
    selectedCompetition = null;
    dlqCursors = [null];
    dlqPage = 0;
    dlqListedDead = null;
    dlqSeq += 1; // answers of loads still running are dropped
    leaderboardSeq += 1;
    runsKey = "";
    $("dlq-body").dataset.key = "";
    $("competitions").dataset.key = "";
    for (const id of ["queue-controls", "dlq-bulk", "dlq-body", "tasks-body", "stores", "breakers", "counters",
      "competitions", "leaderboard-body", "runs", "chart-accepted", "chart-committed", "chart-depth"]) {
      $(id).replaceChildren();
    }
    for (const node of document.querySelectorAll("#app dl.figures dd")) node.textContent = "–";
    for (const id of ["now-accepted", "now-committed", "now-depth", "dlq-count"]) setText(id, "–");
    for (const id of ["max-accepted", "max-committed", "max-depth", "tab-dlq-count", "dlq-page", "leaderboard-title",
      "leaderboard-as-of", "overall-status", "viewer-role", "as-of"]) {
      setText(id, "");
    }
    $("q-paused").className = "";
    $("overall-status").className = "pill";
    for (const id of ["leaderboard", "leaderboard-table", "leaderboard-empty", "dlq-table", "dlq-empty", "tasks-empty",
      "runs-empty", "competitions-empty", "competitions-unavailable", "queue-unavailable", "dlq-admin",
      "dlq-needs-admin"]) {
      $(id).hidden = true;
    }
    $("dlq-prev").disabled = true;
    $("dlq-next").disabled = true;
    $("stale").hidden = true;
    $("app").classList.remove("is-stale");
    showResult("");
    setBanner("");
  }

  // --- tabs ----------------------------------------------------------------------------
  const tabs = Array.from(document.querySelectorAll("[role=tab]"));

  function selectView(name, load = true) {
    view = name;
    for (const tab of tabs) {
      const selected = tab.dataset.view === name;
      tab.setAttribute("aria-selected", selected ? "true" : "false");
      tab.tabIndex = selected ? 0 : -1;
      $(`view-${tab.dataset.view}`).hidden = !selected;
    }
    if (!load || token === null) return;
    if (name === "dlq" && role === "admin") loadDlq();
    if (name === "competitions" && selectedCompetition !== null) loadLeaderboard(session);
    if (name === "runs") loadCharts();
  }

  for (const tab of tabs) {
    tab.addEventListener("click", () => selectView(tab.dataset.view));
    tab.addEventListener("keydown", (event) => {
      const at = tabs.indexOf(tab);
      let to = null;
      if (event.key === "ArrowRight") to = (at + 1) % tabs.length;
      else if (event.key === "ArrowLeft") to = (at - 1 + tabs.length) % tabs.length;
      else if (event.key === "Home") to = 0;
      else if (event.key === "End") to = tabs.length - 1;
      if (to === null) return;
      event.preventDefault();
      tabs[to].focus();
      selectView(tabs[to].dataset.view);
    });
  }

  // --- admin controls (built for an admin only; absent, not disabled, otherwise) -------
  function buildControls() {
    $("queue-controls").replaceChildren();
    $("dlq-bulk").replaceChildren();
    const admin = role === "admin";
    $("dlq-admin").hidden = !admin;
    $("dlq-needs-admin").hidden = admin;
    if (!admin) return;
    const pause = el("button", { type: "button", id: "pause", "data-testid": "pause", text: "Pause" });
    const resume = el("button", { type: "button", id: "resume", "data-testid": "resume", text: "Resume" });
    pause.addEventListener("click", () => queueCommand("pause", "Paused: workers stop claiming"));
    resume.addEventListener("click", () => queueCommand("resume", "Resumed: workers claim again"));
    $("queue-controls").append(pause, resume);

    const requeueAll = el("button", { type: "button", id: "dlq-requeue-all", "data-testid": "dlq-requeue-all", text: "Requeue all" });
    const purgeAll = el("button", { type: "button", id: "dlq-purge-all", "data-testid": "dlq-purge-all", className: "danger", text: "Purge all" });
    requeueAll.addEventListener("click", async () => {
      if (await confirmAction("Requeue every dead letter? Each goes back to the queue with its attempts reset.", "Requeue all")) {
        await dlqCommand("POST", "/v1/admin/dlq/requeue", { all: true });
      }
    });
    purgeAll.addEventListener("click", async () => {
      if (await confirmAction("Purge every dead letter? They are deleted for good.", "Purge all")) {
        await dlqCommand("DELETE", "/v1/admin/dlq", { all: true });
      }
    });
    $("dlq-bulk").append(requeueAll, purgeAll);
  }

  async function queueCommand(action, done) {
    const mine = session;
    showResult(action === "pause" ? "Pausing…" : "Resuming…");
    const result = await request("POST", `/v1/admin/queue/${action}`);
    if (mine !== session) return;
    if (result.status === 200) {
      showResult(done);
      if (!polling()) schedule(250);
    } else {
      commandFailed(result);
    }
  }

  function commandFailed(result) {
    if (result.status === 401) {
      signOut(DENIED);
    } else if (result.status === 429) {
      showResult(`Rate-limited: try again in ${result.retryAfter} s`, true);
    } else if (result.status === 0) {
      showResult("Failed: the server cannot be reached", true);
    } else {
      showResult(`Failed (${errorText(result)})`, true);
    }
  }

  function dlqOutcome(body) {
    if ("purged" in body) return `Purged ${fmtInt(body.purged)}`;
    let text = `Requeued ${fmtInt(body.requeued)}`;
    if (body.refused_queue_full) text += `; ${fmtInt(body.refused_queue_full)} stayed: the queue is full`;
    if (body.not_requeueable) text += `; ${fmtInt(body.not_requeueable)} cannot be requeued (no point)`;
    return text;
  }

  async function dlqCommand(method, path, body) {
    const mine = session;
    const result = await request(method, path, body);
    if (mine !== session) return;
    if (result.status === 200 && result.body) {
      showResult(dlqOutcome(result.body));
      await loadDlq();
      if (!polling()) schedule(250);
    } else {
      commandFailed(result);
    }
  }

  // An in-page confirmation (<dialog>, modal, Escape cancels); resolves true or false.
  function confirmAction(text, okLabel) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel;
    return new Promise((resolve) => {
      const stop = new AbortController();
      let answer = false;
      const finish = (value) => {
        answer = value;
        dialog.close();
      };
      $("confirm-ok").addEventListener("click", () => finish(true), { signal: stop.signal });
      $("confirm-cancel").addEventListener("click", () => finish(false), { signal: stop.signal });
      dialog.addEventListener("close", () => {
        stop.abort();
        resolve(answer && token !== null);
      }, { signal: stop.signal });
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  // --- rendering the summary ---------------------------------------------------------
  function render(next) {
    summary = next;
    lastGood = performance.now();
    markStale();
    if (next.viewer && next.viewer.role !== role) {
      role = next.viewer.role;
      buildControls();
    }
    renderTop(next);
    renderBanner(next);
    renderQueue(next);
    renderWorkers(next);
    renderDlqCount(next);
    renderCompetitions(next);
    renderRuns(next);
  }

  function renderTop(s) {
    const status = $("overall-status");
    status.className = `pill status-${s.status}`;
    setText("overall-status", s.status || "–");
    setText("viewer-role", `signed in: ${role}`);
    const t = parseTime(s.as_of);
    setText("as-of", Number.isFinite(t) ? `as of ${new Date(t * 1000).toLocaleTimeString()}` : "");
  }

  // A store down: named in a banner (what could not be read, and which store).
  function renderBanner(s) {
    const down = [];
    for (const [name, store] of Object.entries(s.stores || {})) {
      if (store && store.ok === false) down.push(STORE_NAMES[name] || name);
    }
    const missing = s.unavailable || [];
    if (!down.length && !missing.length) {
      setBanner("");
      return;
    }
    let text = down.length ? `Store down: ${down.join(", ")}.` : "A store cannot be read.";
    if (missing.length) text += ` Not available now: ${missing.join(", ")}.`;
    setBanner(text, "error");
  }

  function renderQueue(s) {
    const q = s.queue;
    $("queue-unavailable").hidden = q !== null && q !== undefined;
    if (!q) {
      for (const id of ["q-depth", "q-inflight", "q-retry", "q-dead", "q-oldest", "q-paused", "q-path", "q-committed10"]) {
        setText(id, "–");
      }
      return;
    }
    setText("q-depth", fmtInt(q.depth));
    setText("q-inflight", fmtInt(q.inflight));
    setText("q-retry", fmtInt(q.retry_scheduled));
    setText("q-dead", fmtInt(q.dead));
    setText("q-oldest", fmtSeconds(q.oldest_age_s));
    setText("q-paused", q.paused ? "Paused" : "Running");
    $("q-paused").className = q.paused ? "warn" : "";
    setText("q-path", q.path || "–");
    setText("q-committed10", fmtRate(q.committed_per_s_10s));
    addSample(s);
    drawCharts();
  }

  // One sample per new summary.  The rates are the change in the totals over the
  // change in `totals_at` (Redis's clock, read right after the totals; `as_of`, the
  // answering process's clock, when a summary has none).  No rate is drawn across a
  // gap (a hidden tab, an outage: samples more than GAP_S apart start a new line
  // segment rather than averaging over it) nor for a sample whose totals went down
  // (Redis restarted without its AOF, a counter reset): that sample is only the new
  // baseline.
  function addSample(s) {
    const q = s.queue;
    const t = parseTime(s.as_of);
    if (!Number.isFinite(t) || !q.totals) return;
    const last = samples[samples.length - 1];
    if (last && t <= last.t) return; // the same cached summary again
    const totalsAt = typeof q.totals_at === "number" && Number.isFinite(q.totals_at) ? q.totals_at : null;
    const sample = {
      t, totalsAt, depth: q.depth, accepted: null, committed: null, gap: false,
      enqueuedTotal: q.totals.enqueued, committedTotal: q.totals.committed,
    };
    if (last) {
      sample.gap = t - last.t > GAP_S;
      const dt = totalsAt !== null && last.totalsAt !== null ? totalsAt - last.totalsAt : t - last.t;
      const accepted = sample.enqueuedTotal - last.enqueuedTotal;
      const committed = sample.committedTotal - last.committedTotal;
      const fell = !(accepted >= 0 && committed >= 0);
      if (!sample.gap && !fell && dt > 0) {
        sample.accepted = accepted / dt;
        sample.committed = committed / dt;
      }
    }
    samples.push(sample);
    while (samples.length && samples[0].t < t - WINDOW_S - 5) samples.shift();
  }

  function drawCharts() {
    const now = samples.length ? samples[samples.length - 1].t : 0;
    // {t, v, segment}: a gap between two samples starts a new segment.
    const series = (key) => {
      const points = [];
      let segment = 0;
      for (const x of samples) {
        if (x.gap) segment += 1;
        if (x[key] !== null && x[key] !== undefined) points.push({ t: x.t, v: x[key], segment });
      }
      return points;
    };
    const accepted = series("accepted");
    const committed = series("committed");
    const depth = series("depth");
    const last = (list) => (list.length ? list[list.length - 1].v : null);
    setText("now-accepted", accepted.length ? `${fmtRate(last(accepted))}/s` : "–");
    setText("now-committed", committed.length ? `${fmtRate(last(committed))}/s` : "–");
    setText("now-depth", fmtInt(last(depth)));
    setText("max-accepted", `max ${fmtRate(drawChart($("chart-accepted"), accepted, now))}/s`);
    setText("max-committed", `max ${fmtRate(drawChart($("chart-committed"), committed, now))}/s`);
    setText("max-depth", `max ${fmtInt(drawChart($("chart-depth"), depth, now))}`);
  }

  // A line chart of {t, v} over the last WINDOW_S seconds up to `now`; returns its top.
  function drawChart(svg, points, now) {
    const W = 300;
    const H = 100;
    const top = niceCeiling(Math.max(1, ...points.map((p) => p.v)));
    const x = (t) => (W * (1 - (now - t) / WINDOW_S)).toFixed(1);
    const y = (v) => (H - 2 - (v / top) * (H - 6)).toFixed(1);
    const nodes = [];
    for (const fraction of [0.25, 0.5, 0.75]) {
      const gy = (H - 2 - fraction * (H - 6)).toFixed(1);
      nodes.push(svgEl("line", { x1: 0, x2: W, y1: gy, y2: gy, class: "grid", "vector-effect": "non-scaling-stroke" }));
    }
    const segments = new Map();
    for (const p of points.filter((q) => now - q.t <= WINDOW_S)) {
      if (!segments.has(p.segment)) segments.set(p.segment, []);
      segments.get(p.segment).push(p);
    }
    for (const shown of segments.values()) { // one area and one line per segment
      const line = shown.map((p) => `${x(p.t)},${y(p.v)}`).join(" ");
      const first = x(shown[0].t);
      const lastX = x(shown[shown.length - 1].t);
      nodes.push(svgEl("polygon", { points: `${first},${H} ${line} ${lastX},${H}`, class: "area" }));
      nodes.push(svgEl("polyline", { points: line, class: "line", "vector-effect": "non-scaling-stroke" }));
    }
    svg.replaceChildren(...nodes);
    return top;
  }

  function niceCeiling(value) {
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function kvList(target, object) {
    const rows = [];
    for (const [key, value] of Object.entries(object || {})) {
      const shown = value !== null && typeof value === "object" ? JSON.stringify(value)
        : typeof value === "boolean" ? (value ? "yes" : "no") : fmtNumber(value);
      rows.push(el("div", {}, el("dt", { text: key.replace(/_/g, " ") }), el("dd", { text: shown })));
    }
    target.replaceChildren(...rows);
    return rows.length;
  }

  function renderWorkers(s) {
    setText("w-status", s.status || "–");
    setText("w-lag", s.loop ? fmtMs(s.loop.lag_max_ms_last_s) : "–");
    setText("w-lag60", s.loop ? fmtMs(s.loop.lag_max_ms_60s) : "–");
    const workers = s.workers || { tasks: [] };
    setText("w-restarts", fmtInt(workers.restarts));
    const tasks = workers.tasks || [];
    $("tasks-empty").hidden = tasks.length > 0;
    $("tasks-body").replaceChildren(...tasks.map((task) => {
      const state = task.running ? "running"
        : `down${typeof task.down_s === "number" ? ` for ${fmtSeconds(task.down_s)}` : ""}`;
      return el("tr", { "data-testid": "task", "data-task": task.name },
        el("th", { scope: "row", text: task.name }),
        el("td", { className: task.running ? "ok" : "bad", "data-testid": "task-state", text: state }),
        el("td", { text: fmtInt(task.restarts) }),
        el("td", { text: typeof task.busy_s === "number" ? fmtSeconds(task.busy_s) : "idle" }),
        el("td", { className: task.last_error ? "error-text" : "muted", text: task.last_error || "–" }));
    }));
    $("breakers").replaceChildren(...Object.entries(workers.breakers || {}).map(([name, breaker]) => {
      const b = breaker || {};
      const rest = {};
      for (const [key, value] of Object.entries(b)) if (key !== "state" && key !== "last_error") rest[key] = value;
      const details = el("dl", { className: "kv" });
      kvList(details, rest);
      return el("article", { className: `card ${b.state === "closed" ? "" : "card-bad"}`, "data-testid": `breaker-${name}` },
        el("h3", {}, STORE_NAMES[name] || name, " ",
          el("span", { className: `pill ${b.state === "closed" ? "status-ready" : "status-degraded"}`, text: b.state || "–" })),
        details,
        b.last_error ? el("p", { className: "error-text", text: b.last_error }) : null);
    }));
    const cards = [];
    for (const [name, store] of Object.entries(s.stores || {})) {
      if (!store) continue;
      const details = el("dl", { className: "kv" });
      const plain = {};
      for (const [key, value] of Object.entries(store)) {
        if (!["ok", "error", "pool", "durability", "circuit", "latency_ms"].includes(key)) plain[key] = value;
      }
      kvList(details, plain);
      const card = el("article", { className: `card ${store.ok ? "" : "card-bad"}`, "data-testid": `store-${name}` },
        el("h3", {}, STORE_NAMES[name] || name, " ",
          el("span", { className: `pill ${store.ok ? "status-ready" : "status-unavailable"}`, "data-testid": "store-ok", text: store.ok ? "ok" : "down" })),
        el("p", {}, "Latency ", el("strong", { text: fmtMs(store.latency_ms) }),
          " · circuit ", el("strong", { className: store.circuit === "closed" ? "" : "warn", "data-testid": "store-circuit", text: store.circuit || "–" })),
        details);
      if (store.pool) {
        const pool = el("dl", { className: "kv" });
        kvList(pool, store.pool);
        card.append(el("h4", { text: "Pool" }), pool);
      }
      if (store.durability) {
        const durability = el("dl", { className: "kv" });
        kvList(durability, store.durability);
        card.append(el("h4", { text: "Durability" }), durability);
      }
      if (store.error) card.append(el("p", { className: "error-text", text: store.error }));
      cards.push(card);
    }
    $("stores").replaceChildren(...cards);
    kvList($("counters"), workers.counters);
  }

  // --- dead letters --------------------------------------------------------------------
  function renderDlqCount(s) {
    const dead = s.queue ? s.queue.dead : null;
    setText("dlq-count", fmtInt(dead));
    setText("tab-dlq-count", typeof dead === "number" && dead > 0 ? `(${fmtInt(dead)})` : "");
  }

  // The newest load always starts (a Next click during a tick's load is not dropped)
  // and only its answer is shown: each load keeps the page and cursor it asked for, so
  // an older answer can neither be shown under a newer page number nor push its
  // next_cursor onto the list of pages.
  async function loadDlq() {
    if (role !== "admin") return;
    const mine = session;
    dlqSeq += 1;
    const seq = dlqSeq;
    const page = dlqPage;
    const cursor = dlqCursors[page];
    const listedDead = summary && summary.queue ? summary.queue.dead : null;
    const query = new URLSearchParams({ limit: String(DLQ_LIMIT) });
    if (cursor !== null && cursor !== undefined) query.set("cursor", cursor);
    const result = await request("GET", `/v1/admin/dlq?${query}`);
    if (mine !== session || seq !== dlqSeq) return;
    if (result.status !== 200 || !result.body) {
      commandFailed(result);
      return;
    }
    dlqListedDead = listedDead;
    const items = result.body.items || [];
    const next = result.body.next_cursor;
    dlqCursors.length = page + 1;
    if (next !== null && next !== undefined && items.length) dlqCursors.push(next);
    $("dlq-empty").textContent = page === 0 ? "No dead letters" : "No more dead letters";
    $("dlq-empty").hidden = items.length > 0;
    $("dlq-table").hidden = items.length === 0;
    const listKey = JSON.stringify(items);
    if ($("dlq-body").dataset.key !== listKey) { // unchanged rows stay (focus, clicks)
      $("dlq-body").dataset.key = listKey;
      $("dlq-body").replaceChildren(...items.map(dlqRow));
    }
    $("dlq-prev").disabled = page === 0;
    $("dlq-next").disabled = dlqCursors.length <= page + 1;
    setText("dlq-page", `Page ${page + 1}`);
  }

  function dlqRow(item) {
    const key = item.key;
    const point = item.point;
    const actions = el("td", { className: "actions" });
    if (point) {
      const requeue = el("button", { type: "button", className: "requeue", "data-testid": "dlq-requeue", text: "Requeue" });
      requeue.setAttribute("aria-label", `Requeue ${key}`);
      requeue.addEventListener("click", () => dlqCommand("POST", "/v1/admin/dlq/requeue", { ids: [key] }));
      actions.append(requeue);
    }
    const purge = el("button", { type: "button", className: "purge danger", "data-testid": "dlq-purge", text: "Purge" });
    purge.setAttribute("aria-label", `Purge ${key}`);
    purge.addEventListener("click", async () => {
      if (await confirmAction(`Purge the dead letter ${key}? It is deleted for good.`, "Purge")) {
        await dlqCommand("DELETE", "/v1/admin/dlq", { ids: [key] });
      }
    });
    actions.append(purge);
    let detail = "";
    if (point && typeof point === "object") {
      detail = ` (participant ${point.participant_id}, value ${point.value})`;
    }
    return el("tr", { "data-testid": "dlq-row", "data-key": key },
      el("td", {}, el("code", { text: key }), el("span", { className: "muted", text: detail })),
      el("td", { "data-testid": "dlq-reason", text: item.reason || "–" }),
      el("td", { text: fmtInt(item.attempts) }),
      el("td", { text: item.last_failed_at ? fmtTime(item.last_failed_at) : "–" }),
      el("td", { className: item.last_error ? "error-text" : "muted", text: item.last_error || "–" }),
      actions);
  }

  $("dlq-prev").addEventListener("click", () => {
    if (dlqPage > 0) {
      dlqPage -= 1;
      loadDlq();
    }
  });
  $("dlq-next").addEventListener("click", () => {
    if (dlqCursors.length > dlqPage + 1) {
      dlqPage += 1;
      loadDlq();
    }
  });

  // --- competitions and leaderboards ----------------------------------------------------
  function renderCompetitions(s) {
    const list = s.competitions;
    $("competitions-unavailable").hidden = list !== null && list !== undefined;
    if (!list) return;
    $("competitions-empty").hidden = list.length > 0;
    const key = JSON.stringify(list.map((c) => [c.id, c.name, c.slug, c.starts_at, c.ends_at])) + selectedCompetition;
    const target = $("competitions");
    if (target.dataset.key === key) return;
    target.dataset.key = key;
    target.replaceChildren(...list.map((c) => {
      const button = el("button", {
        type: "button", className: "pick", "data-testid": "competition", "data-cid": c.id,
        "aria-pressed": c.id === selectedCompetition ? "true" : "false",
      }, el("strong", { text: c.name }), " ", el("span", { className: "muted", text: c.slug }));
      button.addEventListener("click", () => {
        selectedCompetition = c.id;
        target.dataset.key = "";
        renderCompetitions(summary);
        $("leaderboard-title").textContent = `${c.name}: leaderboard`;
        $("leaderboard-body").replaceChildren();
        $("leaderboard-table").hidden = true;
        $("leaderboard-empty").hidden = true;
        $("leaderboard").hidden = false;
        loadLeaderboard(session);
      });
      const when = c.starts_at || c.ends_at
        ? el("div", { className: "muted small", text: `${c.starts_at ? fmtTime(c.starts_at) : "…"} – ${c.ends_at ? fmtTime(c.ends_at) : "…"}` })
        : null;
      return el("li", {}, button, when);
    }));
    if (selectedCompetition !== null && !list.some((c) => c.id === selectedCompetition)) {
      selectedCompetition = null;
      $("leaderboard").hidden = true;
    }
  }

  // A tab click's load and a tick's may answer out of order: only the newest load's
  // answer is shown (a tick's loads are one at a time, so the newest always arrives).
  async function loadLeaderboard(mine) {
    const cid = selectedCompetition;
    if (cid === null) return;
    leaderboardSeq += 1;
    const seq = leaderboardSeq;
    const result = await request("GET", `/v1/competitions/${encodeURIComponent(cid)}/leaderboard?limit=${LEADERBOARD_LIMIT}`);
    if (mine !== session || seq !== leaderboardSeq || cid !== selectedCompetition) return;
    if (result.status === 404) {
      $("leaderboard-empty").textContent = "This competition no longer exists";
      $("leaderboard-empty").hidden = false;
      $("leaderboard-table").hidden = true;
      return;
    }
    if (result.status !== 200 || !result.body) {
      if (result.status === 401) signOut(DENIED);
      return; // the summary's poll reports the rest (429, 503, unreachable)
    }
    const entries = result.body.entries || [];
    $("leaderboard-empty").textContent = "No points yet";
    $("leaderboard-empty").hidden = entries.length > 0;
    $("leaderboard-table").hidden = entries.length === 0;
    $("leaderboard-body").replaceChildren(...entries.map((e) => el("tr", { "data-testid": "lb-row", "data-participant": e.participant_id },
      el("td", { "data-testid": "lb-rank", text: e.rank }),
      el("td", { "data-testid": "lb-name", text: e.display_name }),
      el("td", { "data-testid": "lb-total", text: fmtNumber(e.total) }),
      el("td", { text: fmtInt(e.points) }))));
    setText("leaderboard-as-of", result.body.as_of ? `as of ${fmtTime(result.body.as_of)}` : "");
  }

  // --- benchmark runs ------------------------------------------------------------------------
  function chartKey(run, chart) {
    return `${run.scenario}/${run.run}/${chart}`;
  }

  function renderRuns(s) {
    const runs = s.runs || [];
    const key = JSON.stringify(runs);
    if (key === runsKey) return;
    runsKey = key;
    $("runs-empty").hidden = runs.length > 0;
    // Forget the charts of runs no longer listed.
    const wanted = new Set(runs.flatMap((run) => (run.charts || []).map((c) => chartKey(run, c))));
    for (const [k, url] of chartUrls) {
      if (!wanted.has(k)) {
        URL.revokeObjectURL(url);
        chartUrls.delete(k);
      }
    }
    $("runs").replaceChildren(...runs.map(runCard));
    if (view === "runs") loadCharts();
  }

  function runCard(run) {
    const paths = run.paths || [];
    const headline = run.headline || {};
    const labels = [];
    for (const figures of Object.values(headline)) {
      for (const label of Object.keys(figures || {})) if (!labels.includes(label)) labels.push(label);
    }
    const table = el("table", { className: "headline" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Path" }),
        ...labels.map((l) => el("th", { scope: "col", text: l.replace(/_/g, " ") })))),
      el("tbody", {}, ...Object.entries(headline).map(([path, figures]) => el("tr", {},
        el("th", { scope: "row", text: path }),
        ...labels.map((l) => el("td", { text: fmtNumber((figures || {})[l]) }))))));
    const thresholds = run.thresholds || { passed: 0, failed: 0 };
    const charts = (run.charts || []).map((chart) => el("figure", { className: "run-chart" },
      el("img", { alt: `${chart} of ${run.scenario} ${run.run}`, "data-chart": chartKey(run, chart), "data-testid": "run-chart" }),
      el("figcaption", { text: chart })));
    return el("article", { className: "card run", "data-testid": "run", "data-run": `${run.scenario}/${run.run}` },
      el("h3", {}, run.scenario, " ", el("span", { className: "muted", text: run.run })),
      el("p", { className: "muted" }, `${run.created ? fmtTime(run.created) : "–"} · scale ${run.scale ?? "–"} · paths ${paths.join(", ") || "–"}`),
      el("p", { "data-testid": "run-thresholds" },
        el("span", { className: thresholds.failed ? "bad" : "ok", text: `Thresholds: ${thresholds.passed} passed, ${thresholds.failed} failed` })),
      el("div", { className: "table-wrap" }, table),
      el("div", { className: "run-charts" }, ...charts));
  }

  // Each chart once per run listing: fetched with the bearer header, shown by object URL.
  function loadCharts() {
    const mine = session;
    for (const img of document.querySelectorAll("#runs img[data-chart]")) {
      const key = img.dataset.chart;
      if (chartUrls.has(key)) {
        if (img.getAttribute("src") !== chartUrls.get(key)) img.src = chartUrls.get(key);
        continue;
      }
      if (img.dataset.loading || img.dataset.failed) continue;
      img.dataset.loading = "1";
      const path = "/v1/dashboard/runs/" + key.split("/").map(encodeURIComponent).join("/");
      request("GET", path, undefined, undefined, "blob")
        .then((result) => {
          if (mine !== session) return;
          if (result.status === 0) return; // unreachable: tried again on a later tick
          const blob = result.body;
          if (result.status !== 200 || !blob) {
            img.dataset.failed = String(result.status);
            img.alt = `${img.alt} (not available: HTTP ${result.status})`;
            return;
          }
          const old = chartUrls.get(key);
          if (old) URL.revokeObjectURL(old);
          const url = URL.createObjectURL(blob);
          chartUrls.set(key, url);
          for (const target of document.querySelectorAll("#runs img[data-chart]")) {
            if (target.dataset.chart === key) target.src = url;
          }
        })
        .finally(() => { delete img.dataset.loading; });
    }
  }

  $("token").focus();
})();
