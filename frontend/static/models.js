/* The operator's models panel: GET /v1/models?all=true with the page's API key (the admin key, or none on an
   open server): every model the server could serve with its state, and what can be done to it now (fetch,
   load, unload, delete). A fetch under way is polled until it ends. */
(() => {
  "use strict";

  const page = window.whisperPage || { apiKey: () => "" };
  const FETCHING = new Set(["downloading", "converting"]);
  const el = {
    panel: document.getElementById("models"),
    refresh: document.getElementById("models-refresh"),
    note: document.getElementById("models-note"),
    list: document.getElementById("model-list"),
  };
  if (!el.panel) return;
  let poll = null;

  function headers() {
    const key = page.apiKey();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function failure(response) {
    try {
      return `${response.status}: ${(await response.json()).error.message}`;
    } catch {
      return `${response.status}: ${response.statusText}`;
    }
  }

  // What the operator may do to a model in its state: [label, method, path suffix].
  function actions(model) {
    const path = `/v1/models/${model.id}`;
    if (model.state === "not_downloaded" || model.state === "failed") {
      const found = [["Fetch", "POST", path]];
      if (model.state === "failed") found.push(["Delete", "DELETE", path]);
      return found;
    }
    if (model.state === "available") {
      const found = [["Load", "POST", `${path}/load`]];
      if (!model.configured) found.push(["Delete", "DELETE", path]);
      return found;
    }
    if (model.state === "loaded" && !model.default) return [["Unload", "POST", `${path}/unload`]];
    return [];
  }

  function row(model) {
    const item = document.createElement("li");
    item.className = "model-row";
    item.dataset.model = model.id;
    item.dataset.state = model.state;
    const name = document.createElement("span");
    name.className = "model-name";
    name.textContent = model.id + (model.default ? " (default)" : "");
    const state = document.createElement("span");
    state.className = `model-state state-${model.state}`;
    state.textContent = model.state.replace("_", " ");
    if (model.error) state.title = model.error;
    const source = document.createElement("span");
    source.className = "help";
    source.textContent = model.source.replace("_", " ");
    item.append(name, " ", state, " ", source);
    for (const [label, method, path] of actions(model)) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "btn btn-quiet";
      button.textContent = label;
      button.setAttribute("aria-label", `${label} ${model.id}`);
      button.addEventListener("click", () => act(method, path, `${label} ${model.id}`));
      item.append(" ", button);
    }
    if (model.error) {
      const error = document.createElement("p");
      error.className = "help model-error";
      error.textContent = model.error;
      item.append(error);
    }
    return item;
  }

  async function show() {
    clearTimeout(poll);
    try {
      const response = await fetch("/v1/models?all=true", { headers: headers() });
      if (!response.ok) {
        el.note.textContent = await failure(response);
        el.list.replaceChildren();
        return;
      }
      const models = (await response.json()).data;
      el.list.replaceChildren(...models.map(row));
      const busy = models.filter((m) => FETCHING.has(m.state)).length;
      el.note.textContent = busy ? `${busy} being fetched…` : `${models.length} models`;
      if (busy) poll = setTimeout(show, 1000);
    } catch (error) {
      el.note.textContent = `The models could not be listed: ${error.message}`;
    }
  }

  async function act(method, path, what) {
    el.note.textContent = `${what}…`;
    try {
      const response = await fetch(path, { method, headers: headers() });
      if (!response.ok) {
        await show();
        el.note.textContent = `${what}: ${await failure(response)}`;
        return;
      }
    } catch (error) {
      el.note.textContent = `${what}: ${error.message}`;
      return;
    }
    await show();
  }

  el.refresh.addEventListener("click", show);
  el.panel.addEventListener("toggle", () => { if (el.panel.open) show(); });
})();
