// Web page of the speech-to-text service: upload or record audio, queue it as a task on the
// server's task API, follow its progress, show the result and keep a list of recent tasks.
// The live mode (microphone over the Realtime API) is in live.js.
// Plain browser JavaScript, no build step, no third-party code.
"use strict";

(() => {
  // ------------------------------------------------------------------------------------------
  // Constants and state

  const API = (document.querySelector('meta[name="api-base"]')?.content || "").replace(/\/$/, "");
  const KEY_STORAGE = "whisper-triton.api-key";
  const ACTIVE = new Set(["queued", "processing"]);
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const TASKS_REFRESH_MS = 3000;
  const FORMAT_LABELS = { txt: "Text", srt: "SubRip", vtt: "WebVTT", json: "JSON" };
  const LANGUAGES = [
    ["en", "English"], ["zh", "Chinese"], ["es", "Spanish"], ["fr", "French"], ["de", "German"],
    ["it", "Italian"], ["pt", "Portuguese"], ["nl", "Dutch"], ["ru", "Russian"], ["uk", "Ukrainian"],
    ["pl", "Polish"], ["cs", "Czech"], ["sv", "Swedish"], ["da", "Danish"], ["no", "Norwegian"],
    ["fi", "Finnish"], ["el", "Greek"], ["tr", "Turkish"], ["ar", "Arabic"], ["he", "Hebrew"],
    ["fa", "Persian"], ["hi", "Hindi"], ["bn", "Bengali"], ["ur", "Urdu"], ["ta", "Tamil"],
    ["ja", "Japanese"], ["ko", "Korean"], ["vi", "Vietnamese"], ["th", "Thai"], ["id", "Indonesian"],
    ["ms", "Malay"], ["ro", "Romanian"], ["hu", "Hungarian"], ["ca", "Catalan"], ["sw", "Swahili"],
  ];

  const $ = (id) => document.getElementById(id);
  const el = {
    keyPanel: $("api-key-panel"), keyForm: $("api-key-form"), keyInput: $("api-key"),
    keyClear: $("api-key-clear"), keyState: $("api-key-state"),
    form: $("upload-form"), fileInput: $("file-input"), dropzone: $("dropzone"),
    recordBtn: $("record-btn"), recordTime: $("record-time"), recordHelp: $("record-help"),
    selected: $("selected"), selectedName: $("selected-name"), selectedSize: $("selected-size"),
    preview: $("preview"), clearFile: $("clear-file"),
    model: $("model"), task: $("task"), language: $("language"), format: $("format"),
    words: $("word-timestamps"), diarize: $("diarize"), submit: $("submit-btn"),
    error: $("error"), errorTitle: $("error-title"), errorMessage: $("error-message"),
    errorMeta: $("error-meta"), errorClose: $("error-close"),
    progressBox: $("progress-box"), progressLabel: $("progress-label"), progressValue: $("progress-value"),
    progressBar: $("progress-bar"), progressFill: $("progress-fill"), progressCancel: $("progress-cancel"),
    status: $("status"),
    tasks: $("tasks"), tasksNote: $("tasks-note"), tasksRefresh: $("tasks-refresh"),
    result: $("result"), resultMeta: $("result-meta"), transcript: $("transcript"), segments: $("segments"),
    downloadMain: $("download-main"),
  };

  const state = {
    apiKey: readKey(),
    file: null, // the File to upload (chosen, dropped or recorded)
    previewUrl: null,
    recorder: null,
    recordStarted: 0,
    recordTimer: 0,
    followed: null, // id of the task whose progress is shown
    pollToken: 0,
    shown: null, // the task whose result is shown
    tasksTimer: 0,
    tasksLoading: false,
    tasksStale: false, // asked to refresh while loading
  };

  // ------------------------------------------------------------------------------------------
  // HTTP

  class ApiError extends Error {
    constructor(message, { status = 0, type = null, code = null, param = null, retryAfter = null } = {}) {
      super(message);
      this.status = status;
      this.type = type;
      this.code = code;
      this.param = param;
      this.retryAfter = retryAfter;
    }
  }

  function authHeaders() {
    return state.apiKey ? { Authorization: `Bearer ${state.apiKey}` } : {};
  }

  /** An ApiError from a failed response: OpenAI's {"error": {...}} body, or whatever came back. */
  function errorFrom(status, statusText, text, retryAfterHeader) {
    let message = "";
    let details = {};
    try {
      const body = JSON.parse(text);
      if (body && typeof body.error === "object" && body.error) {
        details = body.error;
        message = body.error.message || "";
      } else if (body && typeof body.error === "string") {
        message = body.error;
      } else if (body && (body.detail || body.message)) {
        message = typeof body.detail === "string" ? body.detail : body.message || JSON.stringify(body.detail);
      }
    } catch {
      message = (text || "").trim().slice(0, 300);
      if (message.startsWith("<")) message = ""; // an HTML error page from a proxy
    }
    const retry = Number.parseInt(retryAfterHeader || "", 10);
    return new ApiError(message || statusText || `HTTP ${status}`, {
      status,
      type: details.type || null,
      code: details.code || null,
      param: details.param || null,
      retryAfter: Number.isFinite(retry) ? retry : null,
    });
  }

  async function request(path, { method = "GET", body, raw = false } = {}) {
    let response;
    try {
      response = await fetch(API + path, {
        method,
        body,
        headers: { Accept: raw ? "*/*" : "application/json", ...authHeaders() },
        cache: "no-store",
      });
    } catch {
      throw new ApiError("Cannot reach the server. Check the connection and try again.", { code: "network_error" });
    }
    if (!response.ok) {
      const text = await response.text().catch(() => "");
      throw errorFrom(response.status, response.statusText, text, response.headers.get("Retry-After"));
    }
    if (raw) return response;
    return response.status === 204 ? null : response.json();
  }

  /** POST of a FormData with upload progress (fetch cannot report it), resolving to the JSON body. */
  function upload(path, data, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", API + path);
      xhr.setRequestHeader("Accept", "application/json");
      for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      });
      xhr.addEventListener("load", () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          try {
            resolve(JSON.parse(xhr.responseText));
          } catch {
            reject(new ApiError("The server sent an unreadable answer.", { status: xhr.status }));
          }
        } else {
          reject(errorFrom(xhr.status, xhr.statusText, xhr.responseText, xhr.getResponseHeader("Retry-After")));
        }
      });
      xhr.addEventListener("error", () =>
        reject(new ApiError("Cannot reach the server. Check the connection and try again.", { code: "network_error" })));
      xhr.addEventListener("abort", () => reject(new ApiError("The upload was aborted.", { code: "aborted" })));
      xhr.send(data);
    });
  }

  const taskPath = (id) => `/task/${encodeURIComponent(id)}`;

  // ------------------------------------------------------------------------------------------
  // Formatting

  function clock(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
    const tenths = Math.max(0, Math.round(seconds * 10));
    const hours = Math.floor(tenths / 36000);
    const minutes = Math.floor((tenths % 36000) / 600);
    const secs = ((tenths % 600) / 10).toFixed(1).padStart(4, "0");
    const mm = String(minutes).padStart(2, "0");
    return hours ? `${hours}:${mm}:${secs}` : `${mm}:${secs}`;
  }

  function bytes(size) {
    if (size < 1024) return `${size} B`;
    if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
    return `${(size / 1024 / 1024).toFixed(1)} MiB`;
  }

  function duration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds)) return null;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const m = Math.floor(seconds / 60);
    const s = Math.round(seconds % 60);
    return m < 60 ? `${m} min ${s} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function when(iso) {
    if (!iso) return null;
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return null;
    const today = new Date().toDateString() === date.toDateString();
    return date.toLocaleString(undefined, today
      ? { hour: "2-digit", minute: "2-digit", second: "2-digit" }
      : { dateStyle: "medium", timeStyle: "short" });
  }

  const languageName = (code) => (LANGUAGES.find(([c]) => c === code) || [])[1] || code;

  function node(tag, props = {}, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") element.className = value;
      else if (name === "text") element.textContent = value;
      else if (name === "dataset") Object.assign(element.dataset, value);
      else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
      else element.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) {
        element.append(child instanceof Node ? child : String(child));
      }
    }
    return element;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const announce = (text) => { el.status.textContent = text; };

  // ------------------------------------------------------------------------------------------
  // Errors

  const TITLES = {
    0: "Connection problem", 400: "The request was rejected", 401: "API key needed",
    403: "Not allowed", 404: "Not found", 409: "Not possible right now", 413: "File too large",
    415: "Unsupported file", 422: "The request was rejected", 429: "Too many requests",
    503: "Server busy",
  };

  function showError(error, title) {
    const status = error instanceof ApiError ? error.status : 0;
    el.errorTitle.textContent = title || TITLES[status] || (status >= 500 ? "Server error" : "Something went wrong");
    el.errorMessage.textContent = error.message || String(error);
    const meta = [];
    if (error.retryAfter) meta.push(`Try again in ${error.retryAfter} s.`);
    if (status === 401) meta.push("Enter a valid key under “API key” at the top of the page.");
    if (error.param) meta.push(`Field: ${error.param}`);
    if (error.code) meta.push(`Code: ${error.code}`);
    if (status) meta.push(`HTTP ${status}`);
    el.errorMeta.textContent = meta.join(" · ");
    el.errorMeta.hidden = meta.length === 0;
    el.error.hidden = false;
    el.error.scrollIntoView({ block: "nearest", behavior: "smooth" });
    if (status === 401) el.keyPanel.open = true;
  }

  function hideError() {
    el.error.hidden = true;
  }

  // ------------------------------------------------------------------------------------------
  // API key

  function readKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";
    }
  }

  function storeKey(value) {
    state.apiKey = value.trim();
    try {
      if (state.apiKey) localStorage.setItem(KEY_STORAGE, state.apiKey);
      else localStorage.removeItem(KEY_STORAGE);
    } catch {
      // private mode: the key lasts until the page is closed
    }
    el.keyState.textContent = state.apiKey ? "saved" : "not set";
    el.keyState.classList.toggle("is-set", Boolean(state.apiKey));
  }

  /** Each key sees only its own tasks: with another key, the page lets go of the previous key's. */
  function changeKey(value) {
    const before = state.apiKey;
    storeKey(value);
    if (state.apiKey === before) return;
    state.pollToken += 1; // stop following a task of the previous key
    state.followed = null;
    state.shown = null;
    hideProgress();
    el.result.hidden = true;
    el.tasks.replaceChildren();
  }

  // ------------------------------------------------------------------------------------------
  // Choosing, dropping and recording audio

  function setFile(file) {
    state.file = file;
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = null;
    if (!file) {
      el.selected.hidden = true;
      el.preview.removeAttribute("src");
      el.fileInput.value = "";
      return;
    }
    el.selectedName.textContent = file.name;
    el.selectedSize.textContent = bytes(file.size);
    state.previewUrl = URL.createObjectURL(file);
    el.preview.src = state.previewUrl;
    el.selected.hidden = false;
    hideError();
    announce(`Selected ${file.name}`);
  }

  function setupDropzone() {
    el.fileInput.addEventListener("change", () => setFile(el.fileInput.files[0] || null));
    let depth = 0;
    el.dropzone.addEventListener("dragenter", (event) => {
      event.preventDefault();
      depth += 1;
      el.dropzone.classList.add("is-over");
    });
    el.dropzone.addEventListener("dragover", (event) => {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
    });
    el.dropzone.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) el.dropzone.classList.remove("is-over");
    });
    el.dropzone.addEventListener("drop", (event) => {
      event.preventDefault();
      depth = 0;
      el.dropzone.classList.remove("is-over");
      const file = event.dataTransfer?.files?.[0];
      if (file) {
        el.fileInput.value = "";
        setFile(file);
      }
    });
    // A file dropped next to the zone must not make the browser navigate away to it.
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (event) => {
        if (!el.dropzone.contains(event.target)) event.preventDefault();
      });
    }
    el.clearFile.addEventListener("click", () => {
      setFile(null);
      el.fileInput.focus();
    });
  }

  function setupRecorder() {
    const supported = Boolean(navigator.mediaDevices?.getUserMedia) && typeof MediaRecorder !== "undefined";
    if (!supported) {
      el.recordBtn.disabled = true;
      el.recordHelp.textContent = window.isSecureContext
        ? "This browser cannot record audio."
        : "Recording needs HTTPS or localhost.";
      return;
    }
    el.recordBtn.addEventListener("click", () => {
      if (state.recorder?.state === "recording") state.recorder.stop();
      else startRecording();
    });
  }

  async function startRecording() {
    hideError();
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      const denied = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
      showError(new ApiError(denied
        ? "Microphone access was denied. Allow it in the browser's site settings to record."
        : `No microphone could be opened (${error?.name || error}).`), "Cannot record");
      return;
    }
    const types = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/mp4"];
    const mimeType = types.find((type) => MediaRecorder.isTypeSupported(type));
    const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
    const chunks = [];
    recorder.addEventListener("dataavailable", (event) => {
      if (event.data.size) chunks.push(event.data);
    });
    recorder.addEventListener("stop", () => {
      for (const track of stream.getTracks()) track.stop();
      clearInterval(state.recordTimer);
      state.recorder = null;
      el.recordBtn.classList.remove("is-recording");
      el.recordBtn.setAttribute("aria-pressed", "false");
      el.recordBtn.querySelector(".label").textContent = "Record";
      const blob = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
      if (blob.size) setFile(new File([blob], "recording.webm", { type: blob.type }));
      announce("Recording stopped");
    });
    state.recorder = recorder;
    state.recordStarted = Date.now();
    el.recordTime.textContent = "0:00";
    state.recordTimer = setInterval(() => {
      const s = Math.floor((Date.now() - state.recordStarted) / 1000);
      el.recordTime.textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    }, 250);
    recorder.start(250);
    el.recordBtn.classList.add("is-recording");
    el.recordBtn.setAttribute("aria-pressed", "true");
    el.recordBtn.querySelector(".label").textContent = "Stop";
    announce("Recording…");
  }

  // ------------------------------------------------------------------------------------------
  // Options

  async function loadModels() {
    try {
      const body = await request("/v1/models");
      const ids = (body?.data || []).map((model) => model.id).filter(Boolean);
      if (!ids.length) return;
      el.model.replaceChildren(...ids.map((id, index) =>
        node("option", { value: id, text: index === 0 ? `${id} (served)` : id })));
      el.model.value = ids[0];
    } catch (error) {
      if (error.status === 401) showError(error, "API key needed to list the models");
      // otherwise keep "Server default": the task API picks the served model
    }
  }

  function fillLanguages() {
    for (const [code, name] of LANGUAGES) el.language.append(node("option", { value: code, text: `${name} (${code})` }));
  }

  function updateDownloadLabel() {
    const format = el.format.value;
    el.downloadMain.dataset.format = format;
    el.downloadMain.textContent = `Download .${format}`;
    el.downloadMain.setAttribute("aria-label", `Download as ${FORMAT_LABELS[format] || format} (.${format})`);
  }

  // ------------------------------------------------------------------------------------------
  // Submitting and following a task

  async function submit(event) {
    event.preventDefault();
    hideError();
    if (state.recorder?.state === "recording") state.recorder.stop();
    if (!state.file) {
      showError(new ApiError("Choose, drop or record an audio file first."), "No audio yet");
      el.fileInput.focus();
      return;
    }
    const data = new FormData();
    data.append("file", state.file, state.file.name);
    if (el.model.value) data.append("model", el.model.value);
    data.append("task", el.task.value);
    if (el.language.value) data.append("language", el.language.value);
    data.append("word_timestamps", String(el.words.checked));
    data.append("diarize", String(el.diarize.checked));

    el.submit.disabled = true;
    state.pollToken += 1; // stop following an earlier task
    state.followed = null;
    showProgress("Uploading…", 0, false);
    try {
      const queued = await upload("/speech-to-text", data, (fraction) =>
        showProgress("Uploading…", Math.round(fraction * 100), false));
      const id = queued?.identifier;
      if (!id) throw new ApiError("The server did not return a task identifier.");
      announce(`Task queued: ${state.file.name}`);
      showProgress("Queued…", 0, true);
      refreshTasks();
      follow(id);
    } catch (error) {
      hideProgress();
      showError(error);
    } finally {
      el.submit.disabled = false;
    }
  }

  function showProgress(label, percent, cancellable) {
    el.progressBox.hidden = false;
    el.progressLabel.textContent = label;
    const value = Math.max(0, Math.min(100, Math.round(percent || 0)));
    el.progressValue.textContent = `${value}%`;
    el.progressBar.setAttribute("aria-valuenow", String(value));
    el.progressFill.style.width = `${value}%`;
    el.progressCancel.hidden = !cancellable;
  }

  function hideProgress() {
    el.progressBox.hidden = true;
  }

  function progressOf(task) {
    if (task.status === "queued") showProgress("Queued…", task.progress, true);
    else if (task.status === "processing") showProgress("Transcribing…", task.progress, true);
  }

  /** Polls a task until it ends, showing its progress; then shows its result or its error. */
  async function follow(id) {
    const token = ++state.pollToken;
    state.followed = id;
    let delay = 400;
    let failures = 0;
    while (token === state.pollToken) {
      let task;
      try {
        task = await request(taskPath(id));
        failures = 0;
      } catch (error) {
        if (token !== state.pollToken) return;
        failures += 1;
        if (error.status === 0 && failures < 10) { // the server may be restarting: keep trying
          await sleep(2000);
          continue;
        }
        hideProgress();
        state.followed = null;
        showError(error);
        return;
      }
      if (token !== state.pollToken) return;
      if (TERMINAL.has(task.status)) {
        state.followed = null;
        hideProgress();
        finished(task);
        refreshTasks();
        return;
      }
      progressOf(task);
      await sleep(delay);
      delay = Math.min(delay * 1.5, 2000);
    }
  }

  function finished(task) {
    if (task.status === "completed") {
      announce(`Transcription finished: ${task.metadata?.file_name || task.identifier}`);
      showResult(task);
    } else if (task.status === "failed") {
      const error = task.error || {};
      showError(new ApiError(error.message || "The transcription failed.", { code: error.code || null }),
        `Transcription of ${task.metadata?.file_name || "the file"} failed`);
      announce("Transcription failed");
    } else if (task.status === "cancelled") {
      announce("Task cancelled");
    }
  }

  async function cancelTask(id) {
    try {
      await request(`/cancel/${encodeURIComponent(id)}`, { method: "DELETE" });
      if (state.followed === id) {
        state.pollToken += 1;
        state.followed = null;
        hideProgress();
      }
      announce("Task cancelled");
    } catch (error) {
      showError(error, "Could not cancel the task");
    }
    refreshTasks();
  }

  async function deleteTask(id) {
    try {
      await request(`${taskPath(id)}/delete`, { method: "DELETE" });
      if (state.shown?.identifier === id) {
        state.shown = null;
        el.result.hidden = true;
      }
      announce("Task deleted");
    } catch (error) {
      showError(error, "Could not delete the task");
    }
    refreshTasks();
  }

  async function openTask(id) {
    hideError();
    try {
      const task = await request(taskPath(id));
      if (ACTIVE.has(task.status)) {
        progressOf(task);
        follow(id);
      } else {
        finished(task);
        if (task.status === "cancelled") showError(new ApiError("This task was cancelled before it finished."),
          "Cancelled");
      }
    } catch (error) {
      showError(error, "Could not open the task");
    }
    markOpenTask();
  }

  // ------------------------------------------------------------------------------------------
  // The result

  function showResult(task) {
    state.shown = task;
    const result = task.result || {};
    const meta = task.metadata || {};
    const rows = [
      ["File", meta.file_name],
      ["Language", result.language || meta.language ? languageName(result.language || meta.language) : null],
      ["Duration", duration(result.duration ?? meta.audio_duration)],
      ["Model", meta.model],
      ["Task", meta.task_type],
      ["Processing time", duration(meta.duration)],
    ].filter(([, value]) => value);
    el.resultMeta.replaceChildren(...rows.map(([name, value]) =>
      node("div", { className: "meta-item" }, node("dt", { text: name }), node("dd", { text: value }))));

    const segments = Array.isArray(result.segments) ? result.segments : [];
    el.transcript.textContent = (result.text || "").trim() || "(no speech found)";
    el.segments.replaceChildren(...segments.map(segmentItem));
    el.segments.previousElementSibling.hidden = segments.length === 0;
    el.result.hidden = false;
    el.result.focus({ preventScroll: true });
    el.result.scrollIntoView({ behavior: "smooth", block: "start" });
    markOpenTask();
  }

  function segmentItem(segment) {
    const range = node("span", { className: "seg-time" },
      node("time", { datetime: `PT${(segment.start ?? 0).toFixed(3)}S`, text: clock(segment.start) }),
      " – ",
      node("time", { datetime: `PT${(segment.end ?? 0).toFixed(3)}S`, text: clock(segment.end) }));
    const speaker = segment.speaker ? node("span", { className: "speaker", text: segment.speaker }) : null;
    const words = Array.isArray(segment.words) && segment.words.length
      ? node("p", { className: "words", "aria-label": "Words with timestamps" }, segment.words.map(wordItem))
      : null;
    return node("li", { className: "segment", dataset: { start: segment.start, end: segment.end } },
      range, node("div", { className: "seg-body" }, speaker,
        node("p", { className: "seg-text", text: (segment.text || "").trim() }), words));
  }

  function wordItem(word) {
    const p = typeof word.probability === "number" ? word.probability : null;
    const title = `${clock(word.start)} – ${clock(word.end)}${p === null ? "" : ` · ${Math.round(p * 100)}%`}`;
    return node("span", { className: p !== null && p < 0.5 ? "word is-unsure" : "word", title },
      node("span", { className: "word-text", text: (word.word || "").trim() }),
      node("span", { className: "word-time", text: clock(word.start) }));
  }

  function filenameFrom(disposition, fallback) {
    if (disposition) {
      const star = /filename\*\s*=\s*[^']*'[^']*'([^;]+)/i.exec(disposition);
      if (star) {
        try {
          return decodeURIComponent(star[1].trim().replace(/^"|"$/g, ""));
        } catch {
          // fall through to the plain parameter
        }
      }
      const plain = /filename\s*=\s*"?([^";]+)"?/i.exec(disposition);
      if (plain) return plain[1].trim();
    }
    return fallback;
  }

  async function download(format, button) {
    const task = state.shown;
    if (!task) return;
    hideError();
    button.disabled = true;
    try {
      const response = await request(`${taskPath(task.identifier)}/result?format=${encodeURIComponent(format)}`,
        { raw: true });
      const blob = await response.blob();
      const stem = (task.metadata?.file_name || "transcript").replace(/\.[^.]+$/, "") || "transcript";
      const name = filenameFrom(response.headers.get("Content-Disposition"), `${stem}.${format}`);
      const url = URL.createObjectURL(blob);
      const link = node("a", { href: url, download: name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30000);
      announce(`Downloaded ${name}`);
    } catch (error) {
      showError(error, `Could not download the .${format} file`);
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Recent tasks

  function scheduleTasksRefresh(anyActive) {
    clearTimeout(state.tasksTimer);
    state.tasksTimer = 0;
    if (anyActive && !document.hidden) state.tasksTimer = setTimeout(refreshTasks, TASKS_REFRESH_MS);
  }

  async function refreshTasks() {
    // Asked again while the list loads (a key just saved, a task submitted, cancelled or deleted): the answer
    // on its way may predate the change, so it is dropped and the list loaded once more when it comes.
    if (state.tasksLoading) {
      state.tasksStale = true;
      return;
    }
    state.tasksLoading = true;
    state.tasksStale = false;
    el.tasks.setAttribute("aria-busy", "true");
    try {
      const body = await request("/task/all");
      if (state.tasksStale) return;
      const tasks = Array.isArray(body?.tasks) ? body.tasks : [];
      el.tasks.replaceChildren(...tasks.map(taskItem));
      el.tasksNote.textContent = tasks.length ? "" : "No tasks yet. Submitted files appear here.";
      markOpenTask();
      scheduleTasksRefresh(tasks.some((task) => ACTIVE.has(task.status)));
    } catch (error) {
      if (state.tasksStale) return;
      el.tasksNote.textContent = `Could not load the tasks: ${error.message}`;
      if (error.status === 401) {
        el.tasks.replaceChildren();
        el.keyPanel.open = true;
      }
      scheduleTasksRefresh(false);
    } finally {
      state.tasksLoading = false;
      el.tasks.removeAttribute("aria-busy");
      if (state.tasksStale) refreshTasks();
    }
  }

  function taskItem(task) {
    const meta = task.metadata || {};
    const name = meta.file_name || task.identifier;
    const status = task.status || "unknown";
    const details = [
      when(meta.created_at),
      duration(meta.audio_duration),
      meta.task_type === "translate" ? "translate" : null,
      meta.model,
    ].filter(Boolean).join(" · ");
    const active = ACTIVE.has(status);
    const progress = active
      ? node("div", { className: "bar bar-small", role: "progressbar", "aria-label": `Progress of ${name}`,
        "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(task.progress || 0)) },
      node("div", { className: "bar-fill", style: `width: ${Math.round(task.progress || 0)}%` }))
      : null;
    const action = active
      ? node("button", { type: "button", className: "btn btn-quiet btn-small task-cancel", text: "Cancel",
        "aria-label": `Cancel ${name}`, onclick: () => cancelTask(task.identifier) })
      : node("button", { type: "button", className: "btn btn-quiet btn-small task-delete", text: "Delete",
        "aria-label": `Delete ${name}`, onclick: () => deleteTask(task.identifier) });
    return node("li", { className: "task", dataset: { taskId: task.identifier, status } },
      node("button", { type: "button", className: "task-open", onclick: () => openTask(task.identifier),
        "aria-label": `Open ${name} (${status})` },
      node("span", { className: "task-name", text: name }),
      node("span", { className: `badge badge-${status}`, text: status }),
      node("span", { className: "task-details", text: details }),
      progress),
      action);
  }

  function markOpenTask() {
    const id = state.shown?.identifier;
    for (const item of el.tasks.children) {
      if (item.dataset.taskId === id) item.setAttribute("aria-current", "true");
      else item.removeAttribute("aria-current");
    }
  }

  // ------------------------------------------------------------------------------------------
  // Start

  function init() {
    el.keyInput.value = state.apiKey;
    storeKey(state.apiKey);
    el.keyForm.addEventListener("submit", (event) => {
      event.preventDefault();
      changeKey(el.keyInput.value);
      el.keyPanel.open = false;
      hideError();
      loadModels();
      refreshTasks();
    });
    el.keyClear.addEventListener("click", () => {
      el.keyInput.value = "";
      changeKey("");
    });
    setupDropzone();
    setupRecorder();
    fillLanguages();
    updateDownloadLabel();
    el.format.addEventListener("change", updateDownloadLabel);
    el.form.addEventListener("submit", submit);
    el.errorClose.addEventListener("click", hideError);
    el.progressCancel.addEventListener("click", () => state.followed && cancelTask(state.followed));
    el.tasksRefresh.addEventListener("click", refreshTasks);
    for (const button of el.result.querySelectorAll("[data-format]")) {
      button.addEventListener("click", () => download(button.dataset.format, button));
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refreshTasks();
    });
    loadModels();
    refreshTasks();
  }

  // What the live mode (live.js) takes from this page: the key, the chosen options, the key panel.
  window.whisperPage = Object.freeze({
    apiKey: () => state.apiKey,
    model: () => el.model.value,
    language: () => el.language.value,
    askForKey: () => { el.keyPanel.open = true; },
  });

  init();
})();
