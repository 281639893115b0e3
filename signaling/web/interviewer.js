/* Interviewer's page: the call with the candidate (this page offers), the proctoring bot's invitation and
 * presence, live alerts (toasts + timeline), review of events, end of interview and report links, chat.
 *
 * At /interview/{id}/monitor it is the monitor, for a call held on another platform (a Janus room, a WHEP
 * stream): the same page without the call (no camera, no offers), which says where the call is.
 *
 * Test hooks: `window.proctorAlerts` (every `alert` received: {change, event, receivedAt}) and
 * `document.body.dataset.state` ("connecting" | "connected" | "in-call"; "ended" after End interview). */
(function () {
  "use strict";
  const P = window.Proctor;
  const $ = (id) => document.getElementById(id);
  const banner = P.banner;
  const el = P.el;

  window.proctorAlerts = [];
  const monitor = /\/monitor\/?$/.test(location.pathname);
  document.body.dataset.mode = monitor ? "monitor" : "call";

  // Titles and severities of the event types: the server's catalogue (GET /api/catalogue), the same one the
  // report uses; until it has loaded, an alert shows its type name.
  const catalogue = new Map();
  async function loadCatalogue() {
    try {
      const res = await fetch("/api/catalogue", { cache: "default" });
      if (!res.ok) return;
      const data = await res.json();
      for (const kind of data.events || []) catalogue.set(kind.type, kind);
      renderEvents();
    } catch (e) { /* the names stay readable without it */ }
  }

  const app = {
    conn: null,        // {socket, stop}
    connected: false,
    participants: [],
    call: null,        // {sid, pc, pending, remoteStream}
    localStream: null,
    mediaReady: null,  // Promise<MediaStream|null>
    events: new Map(), // id -> event dict
    ended: false,
    botInviting: false,
    reofferTimer: null,
    botStatus: null,   // the bot's last heartbeat: {state, face_fps, at, receivedAt}
  };

  const BOT_SILENT_MS = 10000; // a bot with no heartbeat for this long is shown as not responding
  const clock = (ms) => new Date(ms).toLocaleTimeString();

  // The bot indicator says what the bot is doing, from its heartbeat (every 2 s): analysing at its face rate,
  // waiting for the candidate's media (since when), or silent (not responding since when), or absent.
  function renderBot() {
    const bot = app.participants.some((p) => p.role === "bot");
    const bi = $("bot-indicator");
    const st = app.botStatus;
    let text = "Proctoring bot absent";
    let tone = "pill-muted";
    let state = "absent";
    if (bot) {
      text = "Proctoring bot present";
      tone = "pill-bot";
      state = "present";
      if (st && Date.now() - st.receivedAt > BOT_SILENT_MS) {
        text = "Proctoring bot not responding since " + clock(st.receivedAt);
        tone = "pill-warn";
        state = "silent";
      } else if (st && st.state === "no_media") {
        text = "Proctoring bot: no video from the candidate since " + clock(st.since || st.receivedAt);
        tone = "pill-warn";
        state = "no_media";
      } else if (st && st.state === "analysing") {
        text = "Proctoring bot analysing (" + Number(st.face_fps || 0).toFixed(1) + " faces/s)";
        state = "analysing";
      }
    }
    bi.dataset.present = bot ? "true" : "false";
    bi.dataset.state = state;
    bi.textContent = text;
    bi.className = "pill " + tone;
  }

  function onBotStatus(m) {
    if (!m || typeof m !== "object") return;
    if (m.state === "failed") {
      banner("The proctoring bot failed and stopped analysing (" + (m.reason || "unknown reason") +
        "). Invite it again to resume.", "error");
      return;
    }
    const prev = app.botStatus;
    const since = prev && prev.state === m.state ? prev.since : Date.now();
    app.botStatus = { ...m, receivedAt: Date.now(), since };
    renderBot();
  }

  // ------------------------------------------------------------------ state

  function updateState() {
    if (app.ended) return;
    const pc = app.call && app.call.pc;
    let state = "connecting";
    if (app.connected) state = pc && pc.connectionState === "connected" ? "in-call" : "connected";
    P.setState(state);
    const pill = $("conn-status");
    const label = {
      connecting: "Connecting…",
      connected: app.ended ? "Interview ended" : candidate() && !monitor ? "Calling the candidate…" : "Connected",
      "in-call": "In call",
    }[state];
    pill.textContent = label;
    pill.className = "pill " + (state === "in-call" ? "pill-ok" : state === "connected" ? "pill-info" : "pill-muted");
  }

  // ------------------------------------------------------------------ participants

  function candidate() {
    const cands = app.participants.filter((p) => p.role === "candidate");
    return cands.length ? cands[cands.length - 1] : null; // the newest socket wins (reload, reconnect)
  }

  function onParticipants(msg) {
    app.participants = Array.isArray(msg && msg.participants) ? msg.participants : [];
    const cand = candidate();
    if (!monitor) { // the monitor's candidate is on the other platform: showPlatform() names them
      const ci = $("candidate-indicator");
      ci.dataset.present = cand ? "true" : "false";
      ci.textContent = cand ? "Candidate: " + (cand.name || "joined") : "Candidate not joined";
      ci.className = "pill " + (cand ? "pill-info" : "pill-muted");
    }

    if (!app.participants.some((p) => p.role === "bot")) app.botStatus = null;
    renderBot();
    updateInviteButton();
    syncCall();
    updateState();
  }

  function updateInviteButton() {
    const btn = $("invite-bot");
    const bot = app.participants.some((p) => p.role === "bot");
    if (bot) app.botInviting = false;
    btn.disabled = app.ended || bot || app.botInviting;
    btn.textContent = app.ended ? "Invite proctoring bot" : bot ? "Proctoring bot in call"
      : app.botInviting ? "Inviting…" : "Invite proctoring bot";
  }

  // ------------------------------------------------------------------ call (this page offers)

  async function syncCall() {
    if (monitor) return; // the call is elsewhere
    await app.mediaReady;
    const cand = candidate();
    if (app.ended || !app.connected || !cand) {
      if (app.call && (!cand || app.call.sid !== cand.sid)) hangUp();
      return;
    }
    if (app.call && app.call.sid === cand.sid) return;
    startCall(cand.sid);
  }

  function hangUp() {
    clearTimeout(app.reofferTimer);
    if (!app.call) return;
    const call = app.call;
    app.call = null;
    try { call.pc.close(); } catch (e) { /* closed */ }
    $("remote-video").srcObject = null;
    showRemote(false);
    updateState();
  }

  function showRemote(on) {
    $("remote-placeholder").hidden = on;
    $("remote-placeholder-text").textContent = app.ended
      ? "The interview has ended."
      : candidate() ? "Connecting to the candidate…" : "Waiting for the candidate to join…";
  }

  function send(to, kind, data) {
    const s = app.conn && app.conn.socket;
    if (s && s.connected) s.emit("signal", { to, kind, data });
  }

  async function startCall(sid) {
    hangUp();
    const pc = P.newPeer();
    const call = { sid, pc, pending: [], remoteStream: new MediaStream() };
    app.call = call;
    const have = new Set();
    if (app.localStream) {
      for (const track of app.localStream.getTracks()) {
        pc.addTrack(track, app.localStream);
        have.add(track.kind);
      }
    }
    for (const kind of ["audio", "video"]) {
      if (!have.has(kind)) pc.addTransceiver(kind, { direction: "recvonly" });
    }
    pc.onicecandidate = (e) => {
      if (e.candidate && app.call === call) send(sid, "candidate", P.candidatePayload(e.candidate));
    };
    pc.ontrack = (e) => {
      if (app.call !== call) return;
      const stream = e.streams && e.streams[0] ? e.streams[0] : call.remoteStream;
      if (stream === call.remoteStream) stream.addTrack(e.track);
      P.playStream($("remote-video"), stream, () => { $("unmute-remote").hidden = false; });
    };
    pc.onconnectionstatechange = () => {
      if (app.call !== call) return;
      updateState();
      if (pc.connectionState === "connected") showRemote(true);
      if (pc.connectionState === "failed") {
        // ICE failed (network change, ...): start over with a fresh offer if the candidate is still there.
        showRemote(false);
        clearTimeout(app.reofferTimer);
        app.reofferTimer = setTimeout(() => {
          if (app.call === call) { app.call = null; try { pc.close(); } catch (e) { /* */ } syncCall(); }
        }, 2000);
      }
    };
    showRemote(false);
    try {
      const offer = await pc.createOffer();
      if (app.call !== call) return;
      await pc.setLocalDescription(offer);
      if (app.call !== call) return;
      send(sid, "offer", P.sdpPayload(pc.localDescription));
    } catch (err) {
      console.error("offer failed", err);
      P.toast({ title: "Call setup failed", body: String(err && err.message || err), tone: "error" });
    }
    updateState();
  }

  async function onSignal(msg) {
    if (!msg || !app.call || msg.from !== app.call.sid) return;
    const call = app.call;
    try {
      if (msg.kind === "answer") {
        if (call.pc.signalingState !== "have-local-offer") return;
        await call.pc.setRemoteDescription(msg.data);
        await P.flushCandidates(call);
      } else if (msg.kind === "candidate") {
        await P.addRemoteCandidate(call, msg.data);
      }
    } catch (err) {
      console.error("signal handling failed", msg.kind, err);
    }
  }

  // ------------------------------------------------------------------ monitor: where the call is

  async function showPlatform() {
    $("platform-card").hidden = false;
    $("chat-empty").textContent = "No messages yet. The bot reports here what it receives from the call.";
    try {
      const interview = await P.api("GET", "");
      const room = interview && interview.room;
      if (!room) {
        $("platform-text").textContent = "This interview's call is on this server; you are watching its alerts only.";
        return;
      }
      const where = room.kind === "janus"
        ? "Janus VideoRoom " + room.room + " at " + room.url + ", candidate " + room.candidate
        : room.kind === "whep" ? "the WHEP stream " + room.url : "another platform";
      $("platform-text").textContent = "The call is held in " + where +
        ". Invite the proctoring bot: it joins there; its alerts, the review and the report are here.";
      const ci = $("candidate-indicator");
      ci.textContent = room.kind === "janus" ? "Candidate: " + room.candidate : "Candidate's stream: WHEP";
    } catch (err) {
      $("platform-text").textContent = "Could not load where the call is. " + err.message;
    }
  }

  // ------------------------------------------------------------------ local media

  async function startLocalMedia() {
    try {
      const stream = await P.getLocalMedia(true, { width: { ideal: 1280 }, height: { ideal: 720 } });
      app.localStream = stream;
      const v = $("local-video");
      v.srcObject = stream;
      v.play().catch(() => {});
      const hasAudio = stream.getAudioTracks().length > 0;
      const hasVideo = stream.getVideoTracks().length > 0;
      $("toggle-mic").disabled = !hasAudio;
      $("toggle-cam").disabled = !hasVideo;
      $("media-status").textContent = hasAudio && hasVideo ? "" : !hasVideo ? "No camera: the candidate only hears you." : "No microphone: the candidate only sees you.";
      return stream;
    } catch (err) {
      $("media-status").textContent = P.mediaErrorMessage(err) + " You can still see and hear the candidate.";
      return null;
    }
  }

  function toggleTrack(kind, btn, onLabel, offLabel) {
    if (!app.localStream) return;
    const tracks = kind === "audio" ? app.localStream.getAudioTracks() : app.localStream.getVideoTracks();
    const off = btn.getAttribute("aria-pressed") !== "true";
    tracks.forEach((t) => { t.enabled = !off; });
    btn.setAttribute("aria-pressed", String(off));
    btn.textContent = off ? offLabel : onLabel;
  }

  // ------------------------------------------------------------------ events (alerts)

  function eventTitle(ev) {
    const kind = catalogue.get(ev.type);
    return kind ? kind.title : String(ev.type || "Alert").replace(/_/g, " ");
  }

  function formatOffset(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) return "";
    if (seconds > 1e9) return new Date(seconds * 1000).toLocaleTimeString(); // wall clock (unix seconds)
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, "0");
    return h ? h + ":" + String(m).padStart(2, "0") + ":" + ss : m + ":" + ss;
  }

  function formatDuration(seconds) {
    const s = Math.round(seconds || 0);
    return s < 60 ? s + " s" : Math.floor(s / 60) + " min " + (s % 60) + " s";
  }

  function detailText(detail) {
    if (!detail || typeof detail !== "object") return "";
    const parts = [];
    for (const [k, v] of Object.entries(detail)) {
      if (v === null || v === undefined || typeof v === "object" && !Array.isArray(v)) continue;
      let val = Array.isArray(v) ? v.filter((x) => typeof x !== "object").join(", ") : v;
      if (typeof val === "number") val = Number.isInteger(val) ? val : val.toFixed(2);
      if (val === "") continue;
      parts.push(k.replace(/_/g, " ") + ": " + val);
      if (parts.length >= 4) break;
    }
    return parts.join(" · ");
  }

  function upsertEvent(ev) {
    if (!ev || !ev.id) return;
    const prev = app.events.get(ev.id);
    const merged = Object.assign({}, prev || {}, ev);
    if ((ev.review === null || ev.review === undefined) && prev && prev.review) merged.review = prev.review;
    if (prev && prev.has_snapshot) merged.has_snapshot = true;
    app.events.set(ev.id, merged);
  }

  function renderEvents() {
    const list = $("events-list");
    const events = Array.from(app.events.values()).sort((a, b) => (a.start || 0) - (b.start || 0));
    const focusedId = document.activeElement && document.activeElement.closest && document.activeElement.closest(".event")
      ? document.activeElement.closest(".event").dataset.eventId : null;
    const focusedAction = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.action : null;
    list.replaceChildren(...events.map(renderEvent));
    $("events-empty").hidden = events.length > 0;
    const ongoing = events.filter((e) => e.end === null || e.end === undefined).length;
    const toReview = events.filter((e) => !e.review).length;
    $("events-summary").textContent = events.length
      ? events.length + (events.length === 1 ? " alert" : " alerts") + " · " + ongoing + " ongoing · " + toReview + " to review"
      : "";
    if (focusedId && focusedAction) {
      const btn = list.querySelector('.event[data-event-id="' + CSS.escape(focusedId) + '"] [data-action="' + focusedAction + '"]');
      if (btn) btn.focus();
    }
  }

  function renderEvent(ev) {
    const open = ev.end === null || ev.end === undefined;
    const conf = typeof ev.confidence === "number" ? Math.round(ev.confidence * 100) + "% confidence" : "";
    const when = formatOffset(ev.start);
    const status = open ? el("span", { class: "tag tag-live" }, "ongoing") : el("span", { class: "tag" }, formatDuration(ev.duration !== undefined ? ev.duration : ev.end - ev.start));
    const review = ev.review || "";
    const reviewBtn = (action, label) => el("button", {
      type: "button",
      class: "btn btn-small " + (review === action ? (action === "confirmed" ? "btn-confirmed" : "btn-dismissed") : "btn-ghost"),
      "aria-pressed": String(review === action),
      "aria-label": label + ": " + eventTitle(ev) + (when ? " at " + when : ""),
      dataset: { action },
      onclick: () => reviewEvent(ev.id, action),
    }, label);
    const detail = detailText(ev.detail);
    const thumb = ev.has_snapshot ? snapshotThumb(ev) : null;
    return el("li", {
      class: "event sev-" + ((catalogue.get(ev.type) || {}).severity || "medium") + (open ? " event-open" : "") + (review ? " event-" + review : ""),
      dataset: { eventId: ev.id, type: ev.type || "", review },
    },
      el("div", { class: "event-head" },
        el("span", { class: "event-dot", "aria-hidden": "true" }),
        el("span", { class: "event-title" }, eventTitle(ev)),
        el("span", { class: "event-time" }, when),
        status),
      el("div", { class: "event-body" },
        thumb,
        el("div", { class: "event-meta" }, [conf, detail].filter(Boolean).join(" · "))),
      el("div", { class: "event-actions" },
        reviewBtn("confirmed", "Confirm"),
        reviewBtn("dismissed", "Dismiss"),
        review ? el("span", { class: "event-review-state" }, review === "confirmed" ? "Confirmed" : "Dismissed") : null));
  }

  const snapshotFailed = new Set();

  /** Thumbnail of the event's JPEG evidence (saved in the background: retried once if not there yet). */
  function snapshotThumb(ev) {
    if (snapshotFailed.has(ev.id)) return null;
    const url = P.apiPath("/events/" + encodeURIComponent(ev.id) + "/snapshot") + "?token=" + encodeURIComponent(P.token());
    const img = el("img", { src: url, alt: "Snapshot: " + eventTitle(ev), loading: "lazy", width: 96, height: 54 });
    let retried = false;
    img.addEventListener("error", () => {
      if (!retried) {
        retried = true;
        setTimeout(() => { img.src = url + "&retry=1"; }, 2500);
      } else {
        snapshotFailed.add(ev.id);
        link.remove();
      }
    });
    const link = el("a", { class: "event-thumb", href: url, target: "_blank", rel: "noopener", title: "Open the snapshot" }, img);
    return link;
  }

  async function loadEvents() {
    const btn = $("refresh-events");
    btn.disabled = true;
    try {
      const data = await P.api("GET", "/events");
      const list = Array.isArray(data) ? data : data && Array.isArray(data.events) ? data.events : [];
      for (const ev of list) upsertEvent(ev);
      $("events-error").hidden = true;
      renderEvents();
    } catch (err) {
      $("events-error").textContent = "Could not load the alerts. " + err.message;
      $("events-error").hidden = false;
    } finally {
      btn.disabled = false;
    }
  }

  async function reviewEvent(id, action) {
    const ev = app.events.get(id);
    if (!ev) return;
    const before = ev.review || null;
    if (before === action) return;
    ev.review = action; // optimistic
    renderEvents();
    try {
      const data = await P.api("PATCH", "/events/" + encodeURIComponent(id), { review: action });
      const updated = data && data.event ? data.event : data && data.id ? data : null;
      if (updated) upsertEvent(updated);
      renderEvents();
    } catch (err) {
      const cur = app.events.get(id);
      if (cur) cur.review = before;
      renderEvents();
      P.toast({ title: "Review not saved", body: err.message, tone: "error" });
    }
  }

  function onAlert(msg) {
    if (!msg || !msg.event) return;
    window.proctorAlerts.push({ change: msg.change, event: msg.event, receivedAt: performance.timeOrigin + performance.now() });
    upsertEvent(msg.has_snapshot ? Object.assign({}, msg.event, { has_snapshot: true }) : msg.event);
    renderEvents();
    if (msg.change === "opened") {
      const ev = msg.event;
      const detail = detailText(ev.detail);
      P.toast({
        title: "Alert: " + eventTitle(ev),
        body: [formatOffset(ev.start) && "at " + formatOffset(ev.start),
          typeof ev.confidence === "number" && Math.round(ev.confidence * 100) + "% confidence", detail].filter(Boolean).join(" · "),
        tone: "alert",
        timeout: 10000,
      });
    }
  }

  // ------------------------------------------------------------------ bot, end, report

  async function inviteBot() {
    app.botInviting = true;
    updateInviteButton();
    try {
      await P.api("POST", "/bot");
      P.toast({ title: "Proctoring bot invited", body: "It joins the call in a few seconds.", tone: "info" });
      // Leave "Inviting…" until the bot shows up in participants, or give the button back after a while.
      clearTimeout(app.inviteTimer);
      app.inviteTimer = setTimeout(() => { app.botInviting = false; updateInviteButton(); }, 20000);
    } catch (err) {
      app.botInviting = false;
      P.toast({
        title: err.status === 503 ? "No proctoring bot available" : "Could not invite the bot",
        body: err.status === 503 ? (err.message || "All bots are busy right now (at capacity).") + " Try again in a minute." : err.message,
        tone: "error",
        timeout: 12000,
      });
    }
    updateInviteButton();
  }

  async function endInterview() {
    const btn = $("end-interview");
    btn.disabled = true;
    btn.textContent = "Ending…";
    try {
      await P.api("POST", "/end");
    } catch (err) {
      btn.disabled = false;
      btn.textContent = "End interview";
      P.toast({ title: "Could not end the interview", body: err.message, tone: "error", timeout: 12000 });
      return;
    }
    app.ended = true;
    btn.textContent = "Interview ended";
    hangUp();
    // Leave the room: the candidate's page sees the interviewer go and drops the call. Alerts and the
    // report stay available over HTTP.
    app.connected = false;
    app.conn.stop();
    if (app.localStream) app.localStream.getTracks().forEach((t) => t.stop());
    $("toggle-mic").disabled = true;
    $("toggle-cam").disabled = true;
    updateInviteButton();
    showRemote(false);
    banner("The interview has ended. The report is being built and mailed; the links are below.", "ok");
    $("report-title").textContent = "Final report";
    $("report-note").textContent = "The interview has ended. Open or download the report:";
    const card = $("report-card");
    card.classList.add("card-highlight");
    card.scrollIntoView({ behavior: "smooth", block: "nearest" });
    $("report-pdf").focus();
    loadEvents();
    P.setState("ended");
    $("conn-status").textContent = "Interview ended";
    $("conn-status").className = "pill pill-muted";
  }

  // ------------------------------------------------------------------ boot

  function boot() {
    $("interview-id").textContent = "Interview " + P.interviewId();
    if (!P.token() || !P.interviewId()) {
      banner("This link is incomplete: it needs the interview's address and its ?token=.", "error");
      return;
    }
    for (const ext of ["pdf", "csv", "json"]) $("report-" + ext).href = P.reportUrl(ext);

    $("invite-bot").addEventListener("click", inviteBot);
    $("refresh-events").addEventListener("click", loadEvents);
    const dialog = $("end-dialog");
    $("end-interview").addEventListener("click", () => {
      if (typeof dialog.showModal === "function") dialog.showModal();
      else if (window.confirm("End the interview?")) endInterview();
    });
    dialog.addEventListener("close", () => { if (dialog.returnValue === "end") endInterview(); });
    $("toggle-mic").addEventListener("click", (e) => toggleTrack("audio", e.currentTarget, "Mute microphone", "Unmute microphone"));
    $("toggle-cam").addEventListener("click", (e) => toggleTrack("video", e.currentTarget, "Turn camera off", "Turn camera on"));
    $("unmute-remote").addEventListener("click", () => {
      const v = $("remote-video");
      v.muted = false;
      v.play().catch(() => {});
      $("unmute-remote").hidden = true;
    });

    const chat = P.mountChat(() => app.conn && app.conn.socket, "interviewer", {
      form: $("chat-form"), input: $("chat-input"), log: $("chat-log"), empty: $("chat-empty"),
    });

    app.mediaReady = monitor ? Promise.resolve(null) : startLocalMedia();
    if (monitor) showPlatform();
    loadCatalogue();
    loadEvents();

    app.conn = P.connectSocket({
      onConnect() {
        app.connected = true;
        hangUp(); // our sid changed: the candidate drops the old connection; offer again
        banner(null);
        updateState();
        if (!app.firstConnect) app.firstConnect = true;
        else loadEvents(); // alerts may have been missed while away
      },
      onDisconnect() {
        if (!app.connected) return;
        app.connected = false;
        banner("Connection to the server lost. Reconnecting…", "warn");
        updateState();
      },
      onKicked() {
        app.connected = false;
        hangUp();
        onParticipants({ participants: [] });
        banner(app.ended ? "The interview has ended." : "The server closed this connection.", app.ended ? "ok" : "warn",
          app.ended ? null : { label: "Reconnect", onClick: () => { banner("Reconnecting…", "info"); app.conn.reconnect(); } });
        updateState();
      },
      onRefused(message) {
        app.connected = false;
        banner("The server refused the connection (" + message + "). Check the link or ask for a new one.", "error");
        updateState();
      },
      onServerError(msg) {
        P.toast({ title: "Server error", body: (msg.error || "error") + (msg.for ? " (" + msg.for + ")" : ""), tone: "error" });
      },
    });
    const socket = app.conn.socket;
    socket.on("participants", onParticipants);
    socket.on("signal", onSignal);
    socket.on("alert", onAlert);
    socket.on("chat", (m) => chat.receive(m));
    socket.on("bot_status", onBotStatus);
    setInterval(renderBot, 1000); // a silent bot turns "not responding" without any message
    updateState();
  }

  // For debugging and tests: the live socket and the call's peer connection.
  window.proctorDebug = {
    get socket() { return app.conn && app.conn.socket; },
    get call() { return app.call; },
  };

  boot();
})();
