/* The operator's logs view: GET /v1/logs with the page's API key (the admin key, or none on an open server),
   the lines of one request (its x-request-id) or all of them, from a level up, the frontend's and Triton's. */
(() => {
  "use strict";

  const page = window.whisperPage || { apiKey: () => "" };
  const LIMIT = 500;
  const el = {
    form: document.getElementById("logs-form"),
    requestId: document.getElementById("logs-request-id"),
    level: document.getElementById("logs-level"),
    note: document.getElementById("logs-note"),
    lines: document.getElementById("log-lines"),
  };
  if (!el.form) return;

  async function errorMessage(response) {
    try {
      const body = await response.json();
      return body.error.message || response.statusText;
    } catch {
      return response.statusText;
    }
  }

  function lineItem(entry) {
    const item = document.createElement("li");
    item.className = `log-line log-${entry.level}`;
    item.dataset.source = entry.source;
    const head = document.createElement("span");
    head.className = "log-head";
    head.textContent = `${entry.time} ${String(entry.level).toUpperCase()} ${entry.source}`;
    const message = document.createElement("span");
    message.className = "log-message";
    message.textContent = entry.message;
    item.append(head, " ", message);
    if (entry.request_id && !el.requestId.value.trim()) {
      const link = document.createElement("button");
      link.type = "button";
      link.className = "btn btn-quiet log-request";
      link.textContent = entry.request_id;
      link.title = "Show this request's lines";
      link.addEventListener("click", () => {
        el.requestId.value = entry.request_id;
        el.form.requestSubmit();
      });
      item.append(" ", link);
    }
    return item;
  }

  async function show(event) {
    event.preventDefault();
    const params = new URLSearchParams({ level: el.level.value, limit: String(LIMIT) });
    const requestId = el.requestId.value.trim();
    if (requestId) params.set("request_id", requestId);
    const key = page.apiKey();
    el.note.textContent = "Loading…";
    el.lines.replaceChildren();
    try {
      const response = await fetch(`/v1/logs?${params}`, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
      if (!response.ok) {
        el.note.textContent = `${response.status}: ${await errorMessage(response)}`;
        return;
      }
      const entries = (await response.text()).split("\n").filter(Boolean).map((line) => JSON.parse(line));
      el.lines.append(...entries.map(lineItem));
      el.note.textContent = entries.length ? `${entries.length} lines (the newest ${LIMIT} at most)` : "No lines match.";
    } catch (error) {
      el.note.textContent = `The logs could not be read: ${error.message}`;
    }
  }

  el.form.addEventListener("submit", show);
})();
