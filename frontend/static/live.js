// Live mode of the web page: the microphone transcribed as it is spoken, through the server's OpenAI
// Realtime transcription endpoint (GET /v1/realtime?intent=transcription, a WebSocket). An AudioWorklet
// (pcm-worklet.js) turns the microphone into 24 kHz 16-bit PCM, sent base64 every ~100 ms; the server
// cuts the turns (server_vad) and sends their text; the page shows one line per turn.
// Plain browser JavaScript, no build step, no third-party code.
"use strict";

(() => {
  const API = (document.querySelector('meta[name="api-base"]')?.content || "").replace(/\/$/, "");
  const WORKLET_URL = new URL("pcm-worklet.js", document.currentScript?.src || location.href).href;
  const RATE = 24000;
  const CHUNK_MS = 100;
  const DRAIN_MS = 6000; // how long Stop waits for the transcripts of turns still in progress
  const FLUSH_MS = 300;
  const EARLY_CHUNKS = 50; // at most 5 s of audio wait for the connection
  const UPDATE_ID = "live-session-update";
  const STOP_COMMIT_ID = "live-stop-commit";
  const TRANSCRIPTION = "conversation.item.input_audio_transcription.";
  const CLOSE_AUTH = 3000;
  const CLOSE_EXPIRED = 1001;
  const STATES = { idle: "Off", connecting: "Connecting…", listening: "Listening", stopping: "Finishing…" };
  const LABELS = { idle: "Start live", connecting: "Stop live", listening: "Stop live", stopping: "Finishing…" };

  // What app.js shares: the API key and the options chosen on the page.
  const page = window.whisperPage || { apiKey: () => "", model: () => "", language: () => "", askForKey() {} };

  const $ = (id) => document.getElementById(id);
  const el = {
    button: $("live-btn"), clear: $("live-clear"), state: $("live-state"), help: $("live-help"),
    lines: $("live-lines"), empty: $("live-empty"),
    error: $("live-error"), errorTitle: $("live-error-title"), errorMessage: $("live-error-message"),
    errorMeta: $("live-error-meta"), errorClose: $("live-error-close"),
  };

  let current = null; // the running LiveSession

  // ------------------------------------------------------------------------------------------
  // The page

  function setState(name) {
    el.state.dataset.state = name;
    el.state.textContent = STATES[name];
    el.button.dataset.state = name;
    el.button.querySelector(".label").textContent = LABELS[name];
    el.button.setAttribute("aria-pressed", String(name !== "idle"));
    el.button.classList.toggle("btn-primary", name === "idle");
    el.button.classList.toggle("is-live", name !== "idle");
    el.button.disabled = name === "stopping";
  }

  function showError(title, message, meta = []) {
    el.errorTitle.textContent = title;
    el.errorMessage.textContent = message;
    el.errorMeta.textContent = meta.filter(Boolean).join(" · ");
    el.errorMeta.hidden = !el.errorMeta.textContent;
    el.error.hidden = false;
  }

  function hideError() {
    el.error.hidden = true;
  }

  function realtimeUrl() {
    const url = new URL(`${API}/v1/realtime`, location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.search = "?intent=transcription";
    return url.href;
  }

  /** The session's settings: the first event sent. */
  function sessionUpdate() {
    const transcription = { model: page.model() || "whisper-1" };
    const language = page.language();
    if (language) transcription.language = language;
    const input = { format: { type: "audio/pcm", rate: RATE }, transcription, turn_detection: { type: "server_vad" } };
    return { type: "session.update", event_id: UPDATE_ID, session: { type: "transcription", audio: { input } } };
  }

  function base64(buffer) {
    const bytes = new Uint8Array(buffer);
    let text = "";
    for (let at = 0; at < bytes.length; at += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(at, at + 0x8000));
    }
    return btoa(text);
  }

  /** One line per turn (item_id). The text being spoken or decoded is hidden from screen readers; the
   * final transcript replaces it as a new node, so the log region announces each turn once. */
  class Line {
    constructor(itemId) {
      this.text = "";
      this.node = document.createElement("li");
      this.node.className = "live-line";
      this.node.dataset.item = itemId;
      el.lines.append(this.node);
      el.empty.hidden = true;
      this.show("speaking", "");
    }

    show(state, text, { final = false } = {}) {
      const list = el.lines;
      const following = list.scrollHeight - list.scrollTop - list.clientHeight < 48; // reading the latest turn
      this.node.dataset.state = state;
      const span = document.createElement("span");
      span.className = "live-text";
      if (!final) span.setAttribute("aria-hidden", "true");
      span.textContent = text;
      if (!final) {
        const dots = Object.assign(document.createElement("span"), { className: "live-dots", textContent: "…" });
        span.append(dots);
      }
      this.node.replaceChildren(span);
      if (following) list.scrollTop = list.scrollHeight; // the list only: the page stays where the user is
    }

    get done() {
      return ["final", "failed", "unfinished"].includes(this.node.dataset.state);
    }
  }

  // ------------------------------------------------------------------------------------------
  // A live session: the microphone, the audio graph and the WebSocket

  class LiveSession {
    constructor() {
      this.stream = null;
      this.context = null;
      this.worklet = null;
      this.socket = null;
      this.opened = false;
      this.stopping = false;
      this.ended = false;
      this.speaking = null; // the item being spoken (speech_started without speech_stopped yet)
      this.pending = new Set(); // items whose transcript has not arrived
      this.lines = new Map();
      this.early = []; // audio captured before the connection opened
      this.closingError = null; // the error event the server sent before closing
      this.lastError = null;
      this.settled = null; // resolves the wait of stop() when no turn is pending
      this.flushed = null;
    }

    async start() {
      setState("connecting");
      try {
        this.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      } catch (error) {
        const denied = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
        showError("Cannot start live transcription", denied
          ? "Microphone access was denied. Allow it in the browser's site settings."
          : `No microphone could be opened (${error?.name || error}).`);
        this.end();
        return;
      }
      if (this.stopping || this.ended) {
        this.release();
        return;
      }
      for (const track of this.stream.getAudioTracks()) track.addEventListener("ended", () => this.stop());
      if (!this.connect()) return;
      try {
        await this.capture();
      } catch (error) {
        if (this.ended) return; // stopped while the audio graph was being built
        showError("Cannot start live transcription",
          `The browser could not process the microphone's audio (${error?.message || error}).`);
        this.abort();
        return;
      }
      if (!this.stopping && !this.ended) setState(this.opened ? "listening" : "connecting");
    }

    connect() {
      const key = page.apiKey();
      const protocols = key ? ["realtime", `openai-insecure-api-key.${key}`] : ["realtime"];
      try {
        this.socket = new WebSocket(realtimeUrl(), protocols);
      } catch (error) {
        showError("Cannot start live transcription", error?.name === "SyntaxError" && key
          ? "This API key has characters a browser cannot send to the live endpoint."
          : `The live endpoint cannot be opened (${error?.message || error}).`);
        this.abort();
        return false;
      }
      this.socket.addEventListener("open", () => {
        this.opened = true;
        this.send(sessionUpdate());
        for (const audio of this.early.splice(0)) this.send({ type: "input_audio_buffer.append", audio });
        if (!this.stopping && this.worklet) setState("listening");
      });
      this.socket.addEventListener("message", (message) => {
        let event;
        try {
          event = JSON.parse(message.data);
        } catch {
          return; // not OpenAI's protocol: nothing to show
        }
        this.onEvent(event);
      });
      this.socket.addEventListener("close", (event) => this.onClose(event));
      return true;
    }

    async capture() {
      let source;
      try {
        this.context = new AudioContext({ sampleRate: RATE });
        source = this.context.createMediaStreamSource(this.stream); // Firefox refuses a rate unlike the mic's
      } catch {
        this.context?.close();
        this.context = new AudioContext(); // the worklet resamples to 24 kHz
        source = this.context.createMediaStreamSource(this.stream);
      }
      await this.context.audioWorklet.addModule(WORKLET_URL);
      if (this.ended) return;
      this.worklet = new AudioWorkletNode(this.context, "pcm-worklet", {
        numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
        processorOptions: { targetRate: RATE, chunkMs: CHUNK_MS },
      });
      this.worklet.port.onmessage = (event) => {
        if (event.data instanceof ArrayBuffer) {
          const audio = base64(event.data);
          if (this.opened) this.send({ type: "input_audio_buffer.append", audio });
          else if (this.early.length < EARLY_CHUNKS) this.early.push(audio);
        } else if (event.data === "flushed") {
          this.flushed?.();
        }
      };
      // Silent output: the node must reach the destination to be rendered in every browser.
      const mute = this.context.createGain();
      mute.gain.value = 0;
      source.connect(this.worklet).connect(mute).connect(this.context.destination);
      if (this.context.state === "suspended") await this.context.resume();
    }

    send(event) {
      if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(event));
    }

    line(itemId) {
      if (!this.lines.has(itemId)) this.lines.set(itemId, new Line(itemId));
      return this.lines.get(itemId);
    }

    onEvent(event) {
      const id = event.item_id;
      switch (event.type) {
        case "input_audio_buffer.speech_started":
          this.speaking = id;
          this.pending.add(id);
          this.line(id).show("speaking", "");
          break;
        case "input_audio_buffer.speech_stopped":
        case "input_audio_buffer.committed": {
          if (this.speaking === id) this.speaking = null;
          const line = this.line(id);
          if (!line.done) {
            this.pending.add(id);
            if (line.node.dataset.state === "speaking") line.show("transcribing", line.text);
          }
          break;
        }
        case `${TRANSCRIPTION}delta`: {
          const line = this.line(id);
          if (line.done) break;
          line.text += event.delta || "";
          line.show("partial", line.text.trimStart());
          break;
        }
        case `${TRANSCRIPTION}completed`: {
          const text = (event.transcript || "").trim();
          const line = this.line(id);
          line.show("final", text || "(nothing recognised)", { final: true });
          line.node.classList.toggle("is-empty", !text);
          this.settle(id);
          break;
        }
        case `${TRANSCRIPTION}failed`:
          this.line(id).show("failed", `Not transcribed: ${event.error?.message || "the turn failed."}`,
            { final: true });
          this.settle(id);
          break;
        case "error":
          this.onError(event.error || {});
          break;
        default:
          break; // session.created/updated, cleared, conversation.item.*: nothing to show
      }
    }

    onError(error) {
      const message = error.message || "The server reported an error.";
      if (error.code === "input_audio_buffer_commit_empty" && this.stopping) { // nothing left to commit
        if (this.speaking) this.forget(this.speaking);
        return;
      }
      if (error.code === "invalid_api_key") {
        this.closingError = error;
        showError("API key refused", message, ["Enter a valid key under “API key” at the top of the page.",
          `Code: ${error.code}`]);
        page.askForKey();
        return;
      }
      if (error.code === "session_expired") {
        this.closingError = error;
        showError("Live session expired", message, ["Start live again to go on.", `Code: ${error.code}`]);
        return;
      }
      this.lastError = error;
      const refusedSettings = error.event_id === UPDATE_ID;
      showError(refusedSettings ? "Live settings refused" : "Live transcription error", message,
        [error.param ? `Field: ${error.param}` : null, error.code ? `Code: ${error.code}` : null]);
      if (refusedSettings) this.stop(); // the session would not transcribe as the page says
    }

    onClose(event) {
      const code = event.code;
      if (code === CLOSE_AUTH) {
        showError("API key refused", this.closingError?.message || "The server refused the API key.",
          ["Enter a valid key under “API key” at the top of the page.", `Connection closed with code ${code}`]);
        page.askForKey();
      } else if (code === CLOSE_EXPIRED) {
        showError("Live session expired", this.closingError?.message || "The server ended the live session.",
          ["Start live again to go on.", `Connection closed with code ${code}`]);
      } else if (!this.stopping) {
        if (this.lastError) {
          showError("Live transcription stopped", this.lastError.message || "The server reported an error.",
            [this.lastError.code ? `Code: ${this.lastError.code}` : null, `Connection closed with code ${code}`]);
        } else if (this.opened) {
          showError("Live transcription stopped", "The server closed the connection.",
            [`Connection closed with code ${code}${event.reason ? ` (${event.reason})` : ""}`]);
        } else {
          showError("Cannot reach the live endpoint", "The connection to the server could not be opened. "
            + "Check the connection and try again.", [`Connection closed with code ${code}`]);
        }
      }
      this.end();
    }

    settle(id) {
      this.pending.delete(id);
      if (this.speaking === id) this.speaking = null;
      if (!this.pending.size) this.settled?.();
    }

    forget(id) {
      const line = this.lines.get(id);
      if (line && !line.text) line.node.remove();
      this.lines.delete(id);
      this.settle(id);
      el.empty.hidden = el.lines.children.length > 0;
    }

    /** Stop: the microphone ends, the turn being spoken is committed, outstanding transcripts are
     * awaited for a few seconds, then the connection closes. */
    async stop() {
      if (this.stopping || this.ended) return;
      this.stopping = true;
      if (!this.opened) return this.abort();
      setState("stopping");
      await this.flush();
      this.release();
      if (this.speaking) this.send({ type: "input_audio_buffer.commit", event_id: STOP_COMMIT_ID });
      if (this.pending.size) {
        await new Promise((resolve) => {
          this.settled = resolve;
          setTimeout(resolve, DRAIN_MS);
        });
      }
      this.socket?.close(1000, "stopped");
      this.end();
    }

    /** The samples the worklet still holds (less than a chunk) are sent before the microphone stops. */
    async flush() {
      if (!this.worklet) return;
      await new Promise((resolve) => {
        this.flushed = resolve;
        this.worklet.port.postMessage("flush");
        setTimeout(resolve, FLUSH_MS);
      });
    }

    release() {
      for (const track of this.stream?.getTracks() || []) track.stop();
      this.worklet?.port.close();
      this.worklet?.disconnect();
      this.context?.close().catch(() => {});
      this.worklet = null;
      this.context = null;
    }

    abort() {
      this.stopping = true;
      if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000, "stopped");
      this.end();
    }

    end() {
      if (this.ended) return;
      this.ended = true;
      this.release();
      for (const id of this.pending) {
        const line = this.lines.get(id);
        if (line && !line.done) {
          const text = line.text ? `${line.text.trim()} (unfinished)` : "(stopped before its transcript arrived)";
          line.show("unfinished", text, { final: true });
        }
      }
      this.pending.clear();
      this.settled?.();
      if (current === this) current = null;
      setState("idle");
    }
  }

  // ------------------------------------------------------------------------------------------
  // Start

  function init() {
    const supported = Boolean(navigator.mediaDevices?.getUserMedia) && typeof AudioWorkletNode !== "undefined"
      && typeof WebSocket !== "undefined";
    setState("idle");
    if (!supported) {
      el.button.disabled = true;
      el.help.textContent = window.isSecureContext
        ? "This browser cannot stream the microphone."
        : "Live transcription needs HTTPS or localhost.";
      return;
    }
    el.button.addEventListener("click", () => {
      if (current) {
        current.stop();
      } else {
        hideError();
        current = new LiveSession();
        current.start();
      }
    });
    el.clear.addEventListener("click", () => {
      el.lines.replaceChildren();
      if (current) current.lines.clear();
      el.empty.hidden = false;
    });
    el.errorClose.addEventListener("click", hideError);
    window.addEventListener("pagehide", () => current?.abort());
  }

  init();
})();
