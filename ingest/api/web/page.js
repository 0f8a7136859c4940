/* Tally's live page: reads only the public HTTP API with a read token kept in sessionStorage.
 * No build step: plain ES2020, uPlot (vendored in /assets/uplot/) for the charts.
 * Every value from the API reaches the page through textContent, never as HTML. */
"use strict";

const TOKEN_KEY = "tally.readToken";
const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
const state = { token: null, timer: null, charts: {}, busy: null, refreshes: 0, board: null };

class AuthError extends Error {}

async function api(path) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${state.token}`, Accept: "application/json" },
    cache: "no-store",
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) {
    throw new AuthError(`${body.detail || response.statusText} (HTTP ${response.status})`);
  }
  if (!response.ok) throw new Error(`${path}: ${body.detail || response.statusText}`);
  return body;
}

const counterPath = (suffix = "", query = "") =>
  `/v1/counters/${encodeURIComponent($("counter").value)}${suffix}${query ? "?" + query : ""}`;

function rows(tbody, items, cells) {
  const fragment = document.createDocumentFragment();
  for (const item of items) {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells(item)) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    fragment.appendChild(tr);
  }
  tbody.replaceChildren(fragment);
}

function options(select, values, keep) {
  const wanted = values.includes(keep) ? keep : values[0];
  const current = Array.from(select.options, (o) => o.value);
  if (current.join("\n") !== values.join("\n")) {
    select.replaceChildren(...values.map((v) => new Option(v, v)));
  }
  if (wanted !== undefined) select.value = wanted;
}

const number = new Intl.NumberFormat("en");
const rate = new Intl.NumberFormat("en", { maximumFractionDigits: 2 });

function chart(id, label, stroke) {
  const known = state.charts[id];
  if (known && known.label === label) return known.plot;
  if (known) { known.watch.disconnect(); known.plot.destroy(); }
  const box = $(id);
  const opts = {
    width: Math.max(280, box.clientWidth), height: 220, legend: { show: false },
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
    scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: [{ label: "time (UTC)", stroke: "#4a5360" }, { label, stroke: "#4a5360", size: 60 }],
    series: [{}, { label, stroke, width: 2, fill: stroke + "22", points: { show: false } }],
  };
  const plot = new uPlot(opts, [[], []], box);
  const watch = new ResizeObserver(() =>
    plot.setSize({ width: Math.max(280, box.clientWidth), height: 220 }));
  watch.observe(box);
  state.charts[id] = { label, plot, watch };
  return plot;
}

async function refreshRate() {
  const body = await api(counterPath("/rate"));
  const xs = body.points.map((p) => p.ts), ys = body.points.map((p) => p.per_second);
  const total = body.points.reduce((sum, p) => sum + p.value, 0);
  $("rate-now").textContent = rate.format(ys.length ? ys[ys.length - 1] : 0);
  $("rate-peak").textContent = rate.format(Math.max(0, ...ys));
  $("rate-total").textContent = number.format(total);
  chart("rate-chart", "per second", "#0b5cad").setData([xs, ys]);
}

async function refreshTop() {
  const k = $("top-k").value;
  const body = await api(counterPath("/top", `k=${k}`));
  const uniques = await Promise.all(body.top.map((row) =>
    api(counterPath("", `key=${encodeURIComponent(row.key)}`)).then((c) => c.unique_views.today)));
  rows($("top").tBodies[0], body.top.map((row, i) => [row, uniques[i]]), ([row, users]) => [
    [String(row.rank)], [row.key, "key"], [number.format(row.count), "num"],
    [number.format(users), "num"]]);
  $("top-empty").hidden = body.top.length > 0;
  const keys = body.top.map((row) => row.key);
  const chosen = $("series-key").value;
  options($("series-key"), chosen && !keys.includes(chosen) ? [chosen, ...keys] : keys, chosen);
}

function stepFor(seconds) {  // about 60 to 1,440 points whatever the range
  if (seconds <= 6 * 3600) return "1m";
  if (seconds <= 7 * 86400) return "1h";
  return "1d";
}

async function refreshSeries() {
  const key = $("series-key").value;
  if (!key) {
    $("series-note").textContent = "No key to show yet.";
    return;
  }
  const span = Number($("range").value), step = stepFor(span);
  const to = Math.floor(Date.now() / 1000);
  const body = await api(counterPath("/series",
    `key=${encodeURIComponent(key)}&step=${step}&from=${to - span}&to=${to}`));
  const xs = body.points.map((p) => p.ts), ys = body.points.map((p) => p.value);
  const sum = ys.reduce((a, b) => a + b, 0);
  $("series-note").textContent = `${key}: ${number.format(sum)} counted, one point per ` +
    `${{ "1m": "minute", "1h": "hour", "1d": "day" }[step]} (step ${step}, history: ` +
    `${body.history}).`;
  chart("series-chart", `per ${step}`, "#1e6b32").setData([xs, ys]);
}

async function refreshBoards() {
  const body = await api("/v1/leaderboards");
  const names = body.leaderboards.map((b) => b.board);
  options($("board"), names, $("board").value || state.board);
  $("boards-empty").hidden = names.length > 0;
  $("board").disabled = names.length === 0;
  if (!names.length) {
    rows($("board-top").tBodies[0], [], () => []);
    return;
  }
  const top = await api(`/v1/leaderboards/${encodeURIComponent($("board").value)}/top?k=10`);
  rows($("board-top").tBodies[0], top.entries, (e) => [
    [String(e.rank)], [e.member, "key"], [number.format(e.score), "num"]]);
}

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return seconds < 120 ? `${seconds} s ago` : `${Math.round(seconds / 60)} min ago`;
}

function health(sink) {
  if (!sink.reported) return ["not run yet", "stale"];
  if (sink.last_run !== sink.last_success) return ["failing", "failing"];
  if (sink.lag_seconds > 60) return ["behind", "stale"];
  return ["ok", "ok"];
}

async function refreshFlusher() {
  const body = await api("/v1/flusher");
  rows($("flusher").tBodies[0], body.sinks, (s) => {
    const [word, cls] = health(s);
    const name = s.sink === "events" ? "events (archiver)" : s.sink;
    return [[name], [word, cls], [`${rate.format(s.lag_seconds)} s`, "num"],
      [ago(s.last_success)], [s.errors_total === null ? "–" : number.format(s.errors_total), "num"]];
  });
}

async function refresh(event) {
  if (state.busy) return state.busy;  // one refresh at a time; a slow API never piles them up
  if (event === "timer" && document.hidden) return;  // a background tab asks nothing
  state.busy = (async () => {
    try {
      await Promise.all([refreshRate(), refreshTop(), refreshBoards(), refreshFlusher()]);
      await refreshSeries();  // after the top keys: they fill its key list
      state.refreshes += 1;
      $("status").textContent = `Updated ${new Date().toISOString().slice(11, 19)} UTC; ` +
        `refreshing every ${REFRESH_MS / 1000} s.`;
    } catch (error) {
      if (error instanceof AuthError) return signOut(`The API refused this token: ${error.message}`);
      $("status").textContent = `Could not refresh: ${error.message}`;
    } finally {
      state.busy = null;
    }
  })();
  return state.busy;
}

function clearData() {
  for (const id of ["top", "board-top", "flusher"]) $(id).tBodies[0].replaceChildren();
  for (const id of ["counter", "series-key", "board"]) $(id).replaceChildren();
  for (const id of ["rate-now", "rate-peak", "rate-total"]) $(id).textContent = "–";
  $("series-note").textContent = "";
  for (const known of Object.values(state.charts)) known.plot.setData([[], []]);
}

function signOut(message) {
  clearInterval(state.timer);
  state.timer = null;
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearData();
  $("dashboard").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("login-error").hidden = !message;
  $("status").textContent = message ? "Not signed in: the token was refused." :
    "Enter a read token to see the counts.";
  $("token").focus();
}

async function start(token) {
  state.token = token;
  let body;
  try {
    body = await api("/v1/counters");
  } catch (error) {
    return signOut(error instanceof AuthError ? `The API refused this token: ${error.message}`
      : `Could not reach the API: ${error.message}`);
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  $("login-error").hidden = true;
  $("dashboard").hidden = false;
  options($("counter"), body.counters, new URLSearchParams(location.hash.slice(1)).get("counter"));
  if (!body.counters.length) {
    $("status").textContent = "No counter has counted an event yet.";
    return;
  }
  await refresh();
  state.timer = setInterval(() => refresh("timer"), REFRESH_MS);
}

function onChange(id, action) {
  $(id).addEventListener("change", () => { action(); refresh(); });
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    start($("token").value.trim());
    $("token").value = "";
  });
  $("forget").addEventListener("click", () => signOut(""));
  onChange("counter", () => {
    history.replaceState(null, "", `#counter=${encodeURIComponent($("counter").value)}`);
    $("series-key").replaceChildren();
  });
  onChange("board", () => { state.board = $("board").value; });
  for (const id of ["top-k", "series-key", "range"]) onChange(id, () => {});
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) start(saved);
  else $("token").focus();
});

// For the tests and the curious: how many refreshes ran, and one more on demand.
window.tallyPage = { refresh, get refreshes() { return state.refreshes; } };
