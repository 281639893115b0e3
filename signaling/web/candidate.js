/* Candidate's page: consent first, then camera + microphone (no echo cancellation, noise suppression or
 * gain control, so background voices reach the bot); answers offers from the interviewer (the call,
 * trickle ICE) and from the bot (receive-only; answered once ICE gathering is complete); reports tab and
 * window focus changes; shows whether the proctoring bot is present. Never shows alerts.
 *
 * Test hooks: `?autojoin=1` skips the consent click; `document.body.dataset.state`
 * ("consent" | "connecting" | "connected" | "in-call"). */
(function () {
  "use strict";
  const P = window.Proctor;
  const $ = (id) => document.getElementById(id);
  const banner = P.banner;

  const AUDIO = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
  const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
  const BOT_GATHER_TIMEOUT_MS = 8000;

  const app = {
    conn: null,
    connected: false,
    localStream: null,
    participants: [],
    peers: new Map(),     // remote sid -> {sid, role, pc, pending}
    pageState: { tab_hidden: false, window_blur: false }, // last reported
    everConnected: false,
  };

  // ------------------------------------------------------------------ state

  function interviewerPeer() {
    for (const p of app.peers.values()) if (p.role === "interviewer") return p;
    return null;
  }

  function updateState() {
    if (!app.localStream) return; // still on the consent screen
    const ip = interviewerPeer();
    let state = "connecting";
    if (app.connected) state = ip && ip.pc.connectionState === "connected" ? "in-call" : "connected";
    P.setState(state);
    const interviewerHere = app.participants.some((p) => p.role === "interviewer");
    const pill = $("conn-status");
    pill.textContent = state === "in-call" ? "In call" : state === "connected"
      ? (interviewerHere ? "Connecting the call…" : "Waiting for the interviewer") : app.kicked ? "Disconnected" : "Connecting…";
    pill.className = "pill " + (state === "in-call" ? "pill-ok" : state === "connected" ? "pill-info" : "pill-muted");
    const connectedCall = state === "in-call";
    $("remote-placeholder").hidden = connectedCall;
    $("remote-placeholder-text").textContent = interviewerHere ? "Connecting to the interviewer…" : "Waiting for the interviewer…";
  }

  // ------------------------------------------------------------------ participants

  function onParticipants(msg) {
    app.participants = Array.isArray(msg && msg.participants) ? msg.participants : [];
    const present = new Set(app.participants.map((p) => p.sid));
    for (const sid of Array.from(app.peers.keys())) {
      if (!present.has(sid)) closePeer(sid);
    }
    const bot = app.participants.some((p) => p.role === "bot");
    const bi = $("bot-indicator");
    bi.dataset.present = bot ? "true" : "false";
    bi.textContent = bot ? "Proctoring bot present" : "Proctoring bot absent";
    bi.className = "pill " + (bot ? "pill-bot" : "pill-muted");
    updateState();
  }

  // ------------------------------------------------------------------ peers (this page answers)

  function send(to, kind, data) {
    const s = app.conn && app.conn.socket;
    if (s && s.connected) s.emit("signal", { to, kind, data });
  }

  function closePeer(sid) {
    const entry = app.peers.get(sid);
    if (!entry) return;
    app.peers.delete(sid);
    try { entry.pc.close(); } catch (e) { /* closed */ }
    if (entry.role === "interviewer" && !interviewerPeer()) {
      $("remote-video").srcObject = null;
    }
    updateState();
  }

  function closeAllPeers() {
    for (const sid of Array.from(app.peers.keys())) closePeer(sid);
  }

  // The bot samples a few frames per second: send it only those (its offer says how many, how many lines
  // and how many bits per second it needs), so this browser encodes less and the bot receives and decodes less.
  async function limitForBot(pc, want) {
    if (!want) return;
    for (const sender of pc.getSenders()) {
      if (!sender.track || sender.track.kind !== "video") continue;
      try {
        const params = sender.getParameters();
        if (!params.encodings || !params.encodings.length) params.encodings = [{}];
        const height = sender.track.getSettings().height || 0;
        if (want.maxFramerate > 0) params.encodings[0].maxFramerate = want.maxFramerate;
        if (want.maxBitrate > 0) params.encodings[0].maxBitrate = want.maxBitrate;
        if (want.maxHeight > 0 && height > want.maxHeight) params.encodings[0].scaleResolutionDownBy = height / want.maxHeight;
        await sender.setParameters(params);
        app.botSendParameters = params.encodings[0]; // for the tests
      } catch (err) {
        console.warn("could not limit the video sent to the bot", err);
      }
    }
  }

  async function answerOffer(from, role, offer) {
    // A new offer from a sid replaces its connection (the interviewer and the bot always offer on a new one).
    closePeer(from);
    const pc = P.newPeer();
    const entry = { sid: from, role, pc, pending: [] };
    app.peers.set(from, entry);
    const current = () => app.peers.get(from) === entry;
    const trickle = role !== "bot"; // aiortc takes no trickled candidates: the bot gets one complete answer

    if (trickle) {
      pc.onicecandidate = (e) => {
        if (e.candidate && current()) send(from, "candidate", P.candidatePayload(e.candidate));
      };
    }
    if (role === "interviewer") {
      const remoteStream = new MediaStream();
      pc.ontrack = (e) => {
        if (!current()) return;
        const stream = e.streams && e.streams[0] ? e.streams[0] : remoteStream;
        if (stream === remoteStream) stream.addTrack(e.track);
        P.playStream($("remote-video"), stream, () => { $("unmute-remote").hidden = false; });
      };
    }
    pc.onconnectionstatechange = () => { if (current()) updateState(); };

    try {
      await pc.setRemoteDescription(offer);
      if (!current()) return;
      // Attach our camera and microphone to the transceivers the offer created (sendrecv for the call,
      // sendonly towards the bot whose offer is recvonly).
      for (const track of app.localStream.getTracks()) pc.addTrack(track, app.localStream);
      await pc.setLocalDescription(await pc.createAnswer());
      if (!current()) return;
      if (role === "bot") await limitForBot(pc, offer.send);
      await P.flushCandidates(entry);
      if (trickle) {
        send(from, "answer", P.sdpPayload(pc.localDescription));
      } else {
        await P.waitIceGathering(pc, BOT_GATHER_TIMEOUT_MS);
        if (!current()) return;
        send(from, "answer", P.sdpPayload(pc.localDescription));
      }
    } catch (err) {
      console.error("answering the " + role + "'s offer failed", err);
      if (current()) closePeer(from);
    }
    updateState();
  }

  function onSignal(msg) {
    if (!msg || !msg.from) return;
    if (msg.kind === "offer") {
      if (msg.role !== "interviewer" && msg.role !== "bot") return;
      if (!msg.data || msg.data.type !== "offer" || !msg.data.sdp) return;
      answerOffer(msg.from, msg.role, msg.data);
    } else if (msg.kind === "candidate") {
      const entry = app.peers.get(msg.from);
      if (entry) P.addRemoteCandidate(entry, msg.data);
    }
  }

  // ------------------------------------------------------------------ page events (tab hidden, window left)

  function reportPage(kind, active, force) {
    // Leaving the page (reload, closing the tab) hides it too: that is not a "tab hidden" event.
    if (app.unloading) return;
    if (!force && app.pageState[kind] === active) return;
    app.pageState[kind] = active;
    const s = app.conn && app.conn.socket;
    if (s && s.connected) s.emit("page_event", { kind, active });
  }

  function watchPage() {
    window.addEventListener("beforeunload", () => { app.unloading = true; });
    window.addEventListener("pageshow", () => { app.unloading = false; });
    document.addEventListener("visibilitychange", () => reportPage("tab_hidden", document.visibilityState === "hidden"));
    window.addEventListener("blur", () => reportPage("window_blur", true));
    window.addEventListener("focus", () => reportPage("window_blur", false));
  }

  // ------------------------------------------------------------------ join

  async function join() {
    const btn = $("join");
    const errBox = $("consent-error");
    btn.disabled = true;
    btn.textContent = "Starting camera…";
    errBox.hidden = true;
    try {
      app.localStream = await P.getLocalMedia(AUDIO, VIDEO);
    } catch (err) {
      errBox.textContent = P.mediaErrorMessage(err);
      errBox.hidden = false;
      btn.disabled = false;
      btn.textContent = "Try again";
      return;
    }
    if (!app.localStream.getVideoTracks().length || !app.localStream.getAudioTracks().length) {
      P.toast({
        title: app.localStream.getVideoTracks().length ? "No microphone" : "No camera",
        body: "Joining with what is available; the interviewer will be told by the proctoring report.",
        tone: "warn", timeout: 10000,
      });
    }
    $("consent").hidden = true;
    $("call").hidden = false;
    const local = $("local-video");
    local.srcObject = app.localStream;
    local.play().catch(() => {});
    P.setState("connecting");
    updateState();
    connect();
  }

  function connect() {
    const chat = P.mountChat(() => app.conn && app.conn.socket, "candidate", {
      form: $("chat-form"), input: $("chat-input"), log: $("chat-log"), empty: $("chat-empty"),
    });
    watchPage();
    app.conn = P.connectSocket({
      onConnect() {
        if (app.everConnected) closeAllPeers(); // new sid: the interviewer and the bot offer again
        app.kicked = false;
        app.everConnected = true;
        app.connected = true;
        banner(null);
        // Re-send a still-active page state (the server may not have received it while we were away).
        if (document.visibilityState === "hidden") reportPage("tab_hidden", true, true);
        if (app.pageState.window_blur) reportPage("window_blur", true, true);
        updateState();
      },
      onDisconnect() {
        if (!app.connected) return;
        app.connected = false;
        banner("Connection to the server lost. Reconnecting…", "warn");
        updateState();
      },
      onKicked() {
        // The server closed this socket: the link was opened in another tab or window (which replaced
        // this one), or the interview has ended.
        app.connected = false;
        app.kicked = true;
        closeAllPeers();
        onParticipants({ participants: [] }); // unknown now: do not show a stale "bot present"
        banner("This page was disconnected: the interview was opened in another tab or window, or it has ended.", "warn",
          { label: "Reconnect here", onClick: () => { banner("Reconnecting…", "info"); app.conn.reconnect(); } });
        updateState();
      },
      onRefused(message) {
        app.connected = false;
        banner("The server refused the connection (" + message + "). Check your interview link or ask for a new one.", "error");
        updateState();
      },
      onServerError(msg) {
        console.warn("server error", msg);
      },
    });
    const socket = app.conn.socket;
    socket.on("participants", onParticipants);
    socket.on("signal", onSignal);
    socket.on("chat", (m) => chat.receive(m));
    // No `alert` handler: alerts are for the interviewer only (and the server does not send them here).
  }

  function boot() {
    P.setState("consent");
    if (!P.token() || !P.interviewId()) {
      banner("This link is incomplete: it needs the interview's address and its ?token=.", "error");
      $("join").disabled = true;
      return;
    }
    $("join").addEventListener("click", join);
    $("unmute-remote").addEventListener("click", () => {
      const v = $("remote-video");
      v.muted = false;
      v.play().catch(() => {});
      $("unmute-remote").hidden = true;
    });
    window.addEventListener("pagehide", () => {
      closeAllPeers();
      if (app.localStream) app.localStream.getTracks().forEach((t) => t.stop());
    });
    if (P.flag("autojoin")) join();
    else $("join").focus();
  }

  // For debugging and tests: the live socket and the peer connections by remote sid.
  window.proctorDebug = {
    get socket() { return app.conn && app.conn.socket; },
    get peers() { return app.peers; },
    get botSendParameters() { return app.botSendParameters || null; },
  };

  boot();
})();
