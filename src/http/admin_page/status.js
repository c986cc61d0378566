// The status page's script: polls /readyz and /admin/sessions every two
// seconds and draws them. Every string that comes from a client or a backend
// (caller names, stderr lines, errors) becomes a text node: nothing here
// parses data as HTML.
"use strict";

const POLL_MS = 2000;

// An element with `text` as its text and `className`, if given.
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function cell(row, content, className) {
  const td = el("td", undefined, className);
  if (content instanceof Node) td.append(content);
  else if (content !== undefined && content !== null) td.textContent = String(content);
  row.append(td);
  return td;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Number(seconds);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  const h = Math.floor(s / 3600);
  if (h < 48) return h + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(h / 24) + "d " + (h % 24) + "h";
}

function kib(value) {
  if (value === null || value === undefined) return "";
  const n = Number(value);
  if (n < 1024) return n + " KiB";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " MiB";
  return (n / 1024 / 1024).toFixed(2) + " GiB";
}

// `n` and `word`, with an "s" unless `n` is 1.
function count(n, word) {
  return n + " " + word + (Number(n) === 1 ? "" : "s");
}

function clock(unixMs) {
  return new Date(unixMs).toLocaleTimeString();
}

function stateBadge(word) {
  return el("span", word, "state state-" + String(word).replace(/[^a-z-]/g, ""));
}

function drawServers(ready) {
  const body = document.querySelector("#servers tbody");
  const rows = [];
  for (const [id, s] of Object.entries(ready.servers || {})) {
    const row = el("tr");
    row.dataset.server = id;
    cell(row, id, "mono");
    cell(row, stateBadge(s.state));
    const spares = cell(row, undefined, "num");
    if (s.spares && s.spares.wanted > 0) {
      spares.append(stateBadge(s.spares.state));
      spares.append(" " + s.spares.ready + " / " + s.spares.wanted);
      if (s.spares.starting > 0) spares.append(" (" + s.spares.starting + " starting)");
    } else {
      spares.append(el("span", "off", "muted"));
    }
    cell(row, s.processes, "num");
    cell(row, s.spawns + (s.spawn_failures ? " (" + s.spawn_failures + " failed)" : ""), "num");
    cell(row, s.restarts, "num");
    const loop = s.crash_loop || {};
    const breaker = cell(row);
    if (loop.open) breaker.append(stateBadge("open"), " retry in " + loop.retry_after_s + "s");
    else breaker.append(el("span", "closed", "muted"));
    const errors = el("ul", undefined, "plain");
    for (const e of (s.recent_errors || []).slice(-3).reverse()) {
      const li = el("li");
      li.append(el("span", clock(e.at_unix_ms) + " ", "muted"), el("span", e.error, "error-text"));
      errors.append(li);
    }
    cell(row, errors);
    rows.push(row);
  }
  body.replaceChildren(...rows);
  return Object.keys(ready.servers || {}).length;
}

function drawSessions(table) {
  const body = document.querySelector("#sessions tbody");
  const rows = [];
  for (const s of table.sessions || []) {
    const row = el("tr");
    row.dataset.sessionId = s.id;
    const id = cell(row, String(s.id).slice(0, 12) + "…", "mono");
    id.title = s.id;
    cell(row, s.caller === null ? el("span", "none", "muted") : s.caller);
    cell(row, s.endpoint || "(unified)", "mono");
    cell(row, s.era);
    cell(row, duration(s.age_s), "num");
    cell(row, duration(s.idle_s), "num");
    cell(row, s.in_flight, "num");
    const processes = el("ul", undefined, "plain");
    const stderr = [];
    for (const p of s.processes || []) {
      const li = el("li");
      li.append(el("span", p.server, "mono"), " pid ", el("span", p.pid, "mono pid"),
        " · " + kib(p.rss_kib));
      if (p.restarts > 0) li.append(el("span", " · " + count(p.restarts, "restart"), "error-text"));
      processes.append(li);
      for (const line of p.stderr_tail || []) stderr.push(line);
    }
    cell(row, processes);
    const tail = stderr.slice(-5);
    cell(row, tail.length ? el("pre", tail.join("\n"), "stderr") : el("span", "none", "muted"));
    const end = el("button", "End session", "end");
    end.type = "button";
    end.addEventListener("click", () => endSession(s.id, row, end));
    cell(row, end);
    rows.push(row);
  }
  body.replaceChildren(...rows);
  document.getElementById("no-sessions").hidden = rows.length > 0;

  const spareBody = document.querySelector("#spares tbody");
  const spares = (table.spares || []).map((p) => {
    const row = el("tr");
    cell(row, p.server, "mono");
    cell(row, p.pid, "mono pid");
    cell(row, stateBadge(p.ready ? "ready" : "starting"));
    cell(row, p.warm);
    cell(row, duration(p.age_s), "num");
    cell(row, kib(p.rss_kib), "num");
    return row;
  });
  spareBody.replaceChildren(...spares);
  document.getElementById("no-spares").hidden = spares.length > 0;
  return rows.length;
}

function summary(text, stale) {
  const node = document.getElementById("summary");
  node.textContent = text;
  node.classList.toggle("stale", Boolean(stale));
}

// Fetches JSON with the login's cookie; a lost login shows the form again.
async function getJson(path) {
  const response = await fetch(path, { cache: "no-store", credentials: "same-origin" });
  if (response.status === 401) {
    window.location.reload();
    throw new Error("logged out");
  }
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

let polling = false;

async function poll() {
  if (polling) return;
  polling = true;
  try {
    const [ready, table] = await Promise.all([getJson("/readyz"), getJson("/admin/sessions")]);
    const servers = drawServers(ready);
    const sessions = drawSessions(table);
    summary(count(servers, "server") + " · " + count(sessions, "session") + " · " +
      count((table.spares || []).length, "spare") + " · updated " + new Date().toLocaleTimeString());
  } catch (e) {
    summary("Not updated: " + e.message, true);
  } finally {
    polling = false;
  }
}

async function endSession(id, row, button) {
  button.disabled = true;
  try {
    const response = await fetch("/admin/sessions/" + encodeURIComponent(id), {
      method: "DELETE",
      credentials: "same-origin",
    });
    if (response.ok || response.status === 404) {
      row.remove();
    } else {
      summary("Could not end the session: HTTP " + response.status, true);
      button.disabled = false;
    }
  } catch (e) {
    summary("Could not end the session: " + e.message, true);
    button.disabled = false;
  }
  poll();
}

poll();
setInterval(poll, POLL_MS);
