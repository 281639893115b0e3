/* Shared helpers of the interviewer's and the candidate's pages: token and interview id from the URL,
 * the REST API with a bearer token, the Socket.IO connection, WebRTC peer helpers, toasts, chat.
 * Plain browser JavaScript, no build step; exposes `window.Proctor`. */
(function () {
  "use strict";

  const params = new URLSearchParams(location.search);

  /** The `?token=` of this page (signed; the server checks it, the page only passes it on). */
  function token() {
    return params.get("token") || "";
  }

  /** The interview id from the path `/interview/{id}`. */
  function interviewId() {
    const m = location.pathname.match(/\/interview\/([^/?#]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  /** True for `?name=1` / `?name=true`. */
  function flag(name) {
    const v = params.get(name);
    return v === "1" || v === "true" || v === "yes";
  }

  function setState(state) {
    document.body.dataset.state = state;
  }

  // ---------------------------------------------------------------- REST API

  class ApiError extends Error {
    constructor(status, message, data) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.data = data;
    }
  }

  const HTTP_MESSAGES = {
    400: "The request was not accepted",
    401: "Your link is invalid or has expired",
    403: "This link does not give access to that",
    404: "Interview not found",
    409: "Not possible in the interview's current state",
    429: "Too many requests, please wait a moment",
    503: "The service is at capacity, please try again shortly",
  };

  function apiPath(suffix) {
    return "/api/interviews/" + encodeURIComponent(interviewId()) + (suffix || "");
  }

  /** fetch JSON with `Authorization: Bearer <token>`; throws ApiError with the server's `{"error"}`. */
  async function api(method, suffix, body) {
    const headers = { Authorization: "Bearer " + token(), Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(apiPath(suffix), init);
    } catch (err) {
      throw new ApiError(0, "The server cannot be reached", null);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (err) {
        data = text;
      }
    }
    if (!res.ok) {
      const serverMsg = data && typeof data === "object" && data.error ? String(data.error) : "";
      const base = HTTP_MESSAGES[res.status] || "Request failed";
      throw new ApiError(res.status, serverMsg ? base + ": " + serverMsg : base + " (HTTP " + res.status + ")", data);
    }
    return data;
  }

  /** Link to a report file, authorised by `?token=` so it opens in a new tab. */
  function reportUrl(ext) {
    return apiPath("/report." + ext) + "?token=" + encodeURIComponent(token());
  }

  // ---------------------------------------------------------------- Socket.IO

  /**
   * Connect to the signaling server with `auth: {token}`. Socket.IO reconnects by itself after network
   * drops and server restarts (`onDisconnect`, then `onConnect` again with a new sid). A disconnect
   * decided by the server (the same link opened in another tab replaces this socket, the interview was
   * ended or deleted) is not retried automatically, or two tabs would keep replacing each other:
   * `onKicked()` is called and the page offers `reconnect()`. A refused connection (bad or expired
   * token) calls `onRefused(message)`.
   */
  function connectSocket(handlers) {
    const h = handlers || {};
    const socket = window.io({
      auth: { token: token() },
      reconnection: true,
      reconnectionDelay: 1000,
      reconnectionDelayMax: 5000,
    });
    let stopped = false;
    socket.on("connect", () => h.onConnect && h.onConnect(socket));
    socket.on("disconnect", (reason) => {
      if (reason === "io server disconnect") {
        if (!stopped) h.onKicked ? h.onKicked() : h.onDisconnect && h.onDisconnect(reason);
      } else {
        h.onDisconnect && h.onDisconnect(reason);
      }
    });
    socket.on("connect_error", (err) => {
      if (!socket.active) {
        // The server refused the connection (the namespace CONNECT was rejected): do not retry.
        stopped = true;
        h.onRefused && h.onRefused((err && err.message) || "connection refused");
      } else {
        h.onDisconnect && h.onDisconnect("connect_error");
      }
    });
    socket.on("error", (msg) => h.onServerError && h.onServerError(msg || {}));
    return {
      socket,
      stop() {
        stopped = true;
        socket.disconnect();
      },
      reconnect() {
        stopped = false;
        if (!socket.connected) socket.connect();
      },
    };
  }

  // ---------------------------------------------------------------- WebRTC

  /** RTCPeerConnection with the deployment's ICE servers (`window.PROCTOR_CONFIG.iceServers`, default none). */
  function newPeer() {
    const cfg = window.PROCTOR_CONFIG || {};
    return new RTCPeerConnection({ iceServers: cfg.iceServers || [] });
  }

  /** Resolve when ICE gathering is complete, or after `timeoutMs` (then with what was gathered). */
  function waitIceGathering(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (complete) => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        pc.removeEventListener("icecandidate", onCandidate);
        resolve(complete);
      };
      const check = () => { if (pc.iceGatheringState === "complete") done(true); };
      const onCandidate = (e) => { if (!e.candidate) done(true); };
      const timer = setTimeout(() => done(false), timeoutMs || 5000);
      pc.addEventListener("icegatheringstatechange", check);
      pc.addEventListener("icecandidate", onCandidate);
    });
  }

  /** `{type, sdp}` as sent in a `signal` of kind "offer"/"answer". */
  function sdpPayload(desc) {
    return { type: desc.type, sdp: desc.sdp };
  }

  /** `{candidate, sdpMid, sdpMLineIndex, usernameFragment}` as sent in a `signal` of kind "candidate". */
  function candidatePayload(candidate) {
    return candidate.toJSON ? candidate.toJSON() : {
      candidate: candidate.candidate, sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex,
    };
  }

  /** Add a trickled candidate now, or queue it until the remote description is set. */
  async function addRemoteCandidate(entry, data) {
    if (!data || !data.candidate) return;
    if (!entry.pc.remoteDescription) {
      entry.pending.push(data);
      return;
    }
    try {
      await entry.pc.addIceCandidate(data);
    } catch (err) {
      console.warn("addIceCandidate failed", err);
    }
  }

  async function flushCandidates(entry) {
    const queued = entry.pending.splice(0);
    for (const c of queued) await addRemoteCandidate(entry, c);
  }

  /**
   * Show a stream in a <video>. If the browser blocks autoplay with sound, play muted and call
   * `onBlockedSound()` so the page can offer an "Unmute" button.
   */
  async function playStream(video, stream, onBlockedSound) {
    if (video.srcObject !== stream) video.srcObject = stream;
    try {
      await video.play();
    } catch (err) {
      if (err && err.name === "NotAllowedError" && !video.muted) {
        video.muted = true;
        try { await video.play(); } catch (e) { /* shown once the user interacts */ }
        onBlockedSound && onBlockedSound();
      }
    }
  }

  /** getUserMedia with the given audio constraints; falls back to video only or audio only. */
  async function getLocalMedia(audio, video) {
    const tries = [{ audio, video }, { audio: false, video }, { audio, video: false }];
    let lastErr = null;
    for (const c of tries) {
      try {
        return await navigator.mediaDevices.getUserMedia(c);
      } catch (err) {
        lastErr = err;
        if (err && (err.name === "NotAllowedError" || err.name === "SecurityError")) break;
      }
    }
    throw lastErr || new Error("no camera or microphone");
  }

  function mediaErrorMessage(err) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      return "Access to the camera and microphone was blocked. Allow it in the browser's address bar, then try again.";
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      return "No camera or microphone was found. Connect one, then try again.";
    }
    if (name === "NotReadableError") {
      return "The camera or microphone is in use by another application. Close it, then try again.";
    }
    if (!window.isSecureContext) {
      return "Camera access needs a secure (https) page.";
    }
    return "The camera or microphone could not be started" + (err && err.message ? ": " + err.message : ".");
  }

  // ---------------------------------------------------------------- UI helpers

  /** Small DOM builder: el("li", {class: "x", dataset: {id: 1}}, "text", child). Text is never parsed as HTML. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  /** A toast in #toasts: {title, body, tone: "info"|"warn"|"error"|"alert", timeout ms (0 = sticky)}. */
  function toast(opts) {
    const region = document.getElementById("toasts");
    if (!region) return null;
    const o = opts || {};
    const close = el("button", { type: "button", class: "toast-close", "aria-label": "Dismiss notification" }, "\u00d7");
    const node = el("div", { class: "toast toast-" + (o.tone || "info"), role: o.tone === "alert" ? "alert" : "status" },
      el("div", { class: "toast-text" },
        o.title ? el("strong", { class: "toast-title" }, o.title) : null,
        o.body ? el("span", { class: "toast-body" }, o.body) : null),
      close);
    const remove = () => node.remove();
    close.addEventListener("click", remove);
    region.append(node);
    while (region.children.length > 5) region.firstElementChild.remove();
    const timeout = o.timeout === undefined ? 8000 : o.timeout;
    if (timeout > 0) setTimeout(remove, timeout);
    return node;
  }

  /** The page's #banner: a one-line status with an optional action button; `banner(null)` hides it. */
  function banner(text, tone, action) {
    const b = document.getElementById("banner");
    if (!b) return;
    if (!text) { b.hidden = true; b.replaceChildren(); return; }
    b.className = "banner banner-" + (tone || "info");
    b.replaceChildren(el("span", {}, text));
    if (action) {
      b.append(el("button", { type: "button", class: "btn btn-small btn-secondary banner-action", onclick: action.onClick }, action.label));
    }
    b.hidden = false;
  }

  function clockTime(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  /**
   * Chat box: `form` with an input; messages appended to `log`. The server relays `chat` to the room;
   * if it also echoes to the sender, the pending local copy is marked as delivered instead of doubled.
   */
  function mountChat(getSocket, myRole, ui) {
    const pending = [];
    function add(entry, mine) {
      const item = el("li", { class: "chat-msg" + (mine ? " chat-mine" : "") },
        el("span", { class: "chat-meta" }, entry.who + " \u00b7 " + clockTime(entry.at)),
        el("span", { class: "chat-text" }, entry.text));
      ui.log.append(item);
      ui.log.scrollTop = ui.log.scrollHeight;
      if (ui.empty) ui.empty.hidden = true;
      return item;
    }
    ui.form.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = ui.input.value.trim().slice(0, 500);
      const socket = getSocket();
      if (!text || !socket || !socket.connected) return;
      socket.emit("chat", { text });
      const item = add({ who: "You", text, at: new Date() }, true);
      item.classList.add("chat-pending");
      pending.push({ text, item, at: Date.now() });
      setTimeout(() => {
        const i = pending.findIndex((p) => p.item === item);
        if (i >= 0) { pending.splice(i, 1); item.classList.remove("chat-pending"); }
      }, 3000);
      ui.input.value = "";
    });
    return {
      receive(msg) {
        if (!msg || typeof msg.text !== "string") return;
        if (msg.from_role === myRole) {
          const i = pending.findIndex((p) => p.text === msg.text);
          if (i >= 0) {
            pending[i].item.classList.remove("chat-pending");
            pending.splice(i, 1);
            return;
          }
        }
        const at = msg.at ? new Date(typeof msg.at === "number" && msg.at < 1e12 ? msg.at * 1000 : msg.at) : new Date();
        const roleName = { interviewer: "Interviewer", candidate: "Candidate", bot: "Proctoring bot" }[msg.from_role] || "Someone";
        const who = msg.name && msg.name.toLowerCase() !== msg.from_role && msg.name !== roleName
          ? msg.name + " (" + roleName.toLowerCase() + ")" : roleName;
        add({ who, text: msg.text, at: isNaN(at) ? new Date() : at }, msg.from_role === myRole);
      },
    };
  }

  window.Proctor = {
    token, interviewId, flag, setState,
    ApiError, api, apiPath, reportUrl,
    connectSocket,
    newPeer, waitIceGathering, sdpPayload, candidatePayload, addRemoteCandidate, flushCandidates, playStream,
    getLocalMedia, mediaErrorMessage,
    el, toast, banner, clockTime, mountChat,
  };
})();
