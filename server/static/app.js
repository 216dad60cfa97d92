// The xemo page: send a clip over WS /v1/stream and show what comes back as it comes: the label and its scores,
// each cue as a bar on its modality's lane under the player, and the explanation token by token, each finished
// segment tied to the cues it cites. No framework and nothing loaded from elsewhere.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const app = $("app");
  const player = $("player");
  const explanation = $("explanation");
  const MODALITIES = [["visual", "Visual"], ["auditory", "Auditory"], ["verbal", "Verbal"]];
  const CHUNK = 256 * 1024; // one binary frame; the server caps a frame at a few MB
  const ROW_PX = 22; // height of one row of bars in a lane
  const AUDIO_EXT = /\.(wav|flac|ogg|oga|mp3|m4a|opus)$/i;
  const ERROR_TITLES = {
    400: "The request was not understood.",
    401: "This server needs a valid API key.",
    408: "The upload did not arrive in time.",
    413: "The file is too large for this server.",
    415: "This file type is not supported.",
    422: "The clip or the options could not be used.",
    429: "Too many requests: wait a moment, then try again.",
    500: "The server failed on this clip.",
    503: "The server is busy or not ready yet: try again shortly.",
    504: "The analysis took too long.",
  };

  let clip = null; // {file, name, seconds, audio, url}
  let sock = null;
  let recorder = null;
  let cues = new Map(); // cue id -> cue
  let streamed = ""; // the token text received so far
  let committed = 0; // how much of `streamed` has been placed into segments
  let segmentCount = 0;
  let pending = null; // the text node holding streamed text not yet in a segment
  let startedAt = 0;

  // -- state and messages -------------------------------------------------------------------------------------
  function setState(s) {
    app.dataset.state = s;
    document.documentElement.dataset.state = s;
    const busy = s === "uploading" || s === "analyzing" || s === "streaming";
    $("analyze-button").disabled = busy || !clip || recorder !== null;
    $("cancel-button").hidden = !busy;
    $("record-button").disabled = busy;
    explanation.setAttribute("aria-busy", String(s === "streaming" || s === "analyzing"));
  }

  function status(text) {
    $("status").textContent = text;
  }

  function sentence(text) {
    const t = String(text || "").trim();
    if (!t) return "";
    const s = t[0].toUpperCase() + t.slice(1);
    return /[.!?]$/.test(s) ? s : s + ".";
  }

  // status: the HTTP status (from the close code 4000 + status, or the HTTP answer); envelope: the error frame.
  function describeError(statusCode, envelope) {
    const err = (envelope && envelope.error) || {};
    const title = ERROR_TITLES[statusCode] || (statusCode ? `The server refused the request (${statusCode}).`
      : "The connection to the server was lost.");
    return { status: statusCode || 0, title, detail: sentence(err.message), type: err.type || "",
             requestId: err.request_id || "" };
  }

  function showError(e) {
    const box = $("error");
    box.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = e.title;
    box.append(strong);
    if (e.detail) {
      const p = document.createElement("span");
      p.className = "detail";
      p.textContent = " " + e.detail;
      box.append(p);
    }
    if (e.requestId) {
      const small = document.createElement("small");
      small.textContent = `Request id ${e.requestId}`;
      box.append(small);
    }
    box.dataset.status = String(e.status || "");
    box.dataset.type = e.type || "";
    box.hidden = false;
    if (e.status === 401) {
      $("key-row").hidden = false;
      $("api-key-input").focus();
    }
  }

  function clearError() {
    const box = $("error");
    box.hidden = true;
    box.replaceChildren();
    delete box.dataset.status;
    delete box.dataset.type;
  }

  // -- choosing a clip ----------------------------------------------------------------------------------------
  function sizeText(n) {
    return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} kB`;
  }

  function setClip(file, seconds) {
    if (clip && clip.url) URL.revokeObjectURL(clip.url);
    const audio = (file.type || "").startsWith("audio/") || AUDIO_EXT.test(file.name || "");
    clip = { file, name: file.name || "clip", seconds: seconds || 0, audio, url: URL.createObjectURL(file) };
    resetOutput();
    clearError();
    player.src = clip.url;
    $("chosen").textContent = `Chosen: ${clip.name} (${sizeText(file.size)}${seconds ? `, ${seconds.toFixed(1)} s` : ""}).`;
    status("Ready: press Analyze.");
    setState("ready");
  }

  $("file-input").addEventListener("change", (e) => {
    const f = e.target.files && e.target.files[0];
    if (f) setClip(f);
  });

  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "dragend"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) setClip(f);
  });
  // A file dropped anywhere else would make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  // -- recording ----------------------------------------------------------------------------------------------
  function recordLimit() {
    return Math.max(1, Number(app.dataset.recordLimit) || 10);
  }

  function showLimit() {
    $("record-timer").textContent = `Limit ${recordLimit()} s`;
  }

  async function toggleRecord() {
    if (recorder) {
      recorder.stop();
      return;
    }
    clearError();
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } },
                                                         audio: true });
    } catch (err) {
      showError({ status: 0, title: "The camera or microphone could not be opened.", detail: sentence(err.message) });
      return;
    }
    const type = ["video/webm;codecs=vp8,opus", "video/webm", "video/mp4"].find((t) => MediaRecorder.isTypeSupported(t))
      || "";
    const chunks = [];
    const r = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
    const limit = recordLimit();
    const preview = $("preview");
    preview.srcObject = stream;
    preview.hidden = false;
    preview.play().catch(() => {});
    const t0 = performance.now();
    const tick = setInterval(() => {
      const s = Math.min(limit, (performance.now() - t0) / 1000);
      $("record-timer").textContent = `Recording ${s.toFixed(1)} s of ${limit} s`;
    }, 100);
    const stopAt = setTimeout(() => r.state !== "inactive" && r.stop(), limit * 1000);
    r.ondataavailable = (e) => e.data && e.data.size && chunks.push(e.data);
    r.onstop = () => {
      clearInterval(tick);
      clearTimeout(stopAt);
      for (const t of stream.getTracks()) t.stop();
      preview.srcObject = null;
      preview.hidden = true;
      recorder = null;
      const button = $("record-button");
      button.textContent = "Record camera and microphone";
      button.setAttribute("aria-pressed", "false");
      const seconds = Math.min(limit, (performance.now() - t0) / 1000);
      $("record-timer").textContent = `Recorded ${seconds.toFixed(1)} s (limit ${limit} s)`;
      const mime = r.mimeType || type || "video/webm";
      const blob = new Blob(chunks, { type: mime });
      setClip(new File([blob], mime.includes("mp4") ? "recording.mp4" : "recording.webm", { type: mime }), seconds);
    };
    r.start(250);
    recorder = r;
    const button = $("record-button");
    button.textContent = "Stop recording";
    button.setAttribute("aria-pressed", "true");
    $("analyze-button").disabled = true;
  }

  $("record-button").addEventListener("click", toggleRecord);

  // -- the result ---------------------------------------------------------------------------------------------
  function resetOutput() {
    cues = new Map();
    streamed = "";
    committed = 0;
    segmentCount = 0;
    $("label").textContent = "\u2014";
    delete $("label").dataset.label;
    $("scores").replaceChildren();
    explanation.replaceChildren();
    pending = document.createTextNode("");
    explanation.append(pending);
    buildLanes();
    hideTip();
  }

  function showLabel(ev) {
    $("label").textContent = ev.label;
    $("label").dataset.label = ev.label;
    const list = $("scores");
    list.replaceChildren();
    const entries = Object.entries(ev.scores || {}).sort((a, b) => b[1] - a[1]);
    for (const [name, p] of entries) {
      const pct = Math.round(p * 1000) / 10;
      const li = document.createElement("li");
      li.dataset.testid = `score-${name}`;
      li.dataset.score = String(p);
      if (name === ev.label) li.classList.add("top");
      const n = document.createElement("span");
      n.className = "name";
      n.textContent = name;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.setAttribute("role", "meter");
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "100");
      bar.setAttribute("aria-valuenow", String(pct));
      bar.setAttribute("aria-label", name);
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${Math.max(0, Math.min(100, p * 100))}%`;
      bar.append(fill);
      const v = document.createElement("span");
      v.className = "pct";
      v.textContent = `${pct.toFixed(1)}%`;
      li.append(n, bar, v);
      list.append(li);
    }
  }

  // -- timeline -----------------------------------------------------------------------------------------------
  function buildLanes() {
    const lanes = $("lanes");
    lanes.replaceChildren();
    for (const [m, title] of MODALITIES) {
      const lane = document.createElement("div");
      lane.className = "lane";
      lane.dataset.modality = m;
      const name = document.createElement("div");
      name.className = "lane-name";
      name.id = `lane-${m}`;
      name.textContent = title;
      const track = document.createElement("div");
      track.className = `track m-${m}`;
      track.dataset.testid = `track-${m}`;
      track.setAttribute("role", "list");
      track.setAttribute("aria-labelledby", `lane-${m}`);
      const head = document.createElement("div");
      head.className = "playhead";
      head.setAttribute("aria-hidden", "true");
      track.append(head);
      track.addEventListener("click", (e) => {
        if (e.target !== track) return;
        const box = track.getBoundingClientRect();
        seek(((e.clientX - box.left) / box.width) * duration());
      });
      lane.append(name, track);
      lanes.append(lane);
    }
    drawAxis();
  }

  function duration() {
    const d = player.duration;
    if (Number.isFinite(d) && d > 0) return d;
    if (clip && clip.seconds > 0) return clip.seconds;
    let m = 0;
    for (const c of cues.values()) m = Math.max(m, Number(c.end) || 0, Number(c.start) || 0);
    return m || 1;
  }

  function timed(c) {
    return typeof c.start === "number" && Number.isFinite(c.start);
  }

  function fmt(x) {
    return `${Number(x).toFixed(2)} s`;
  }

  function evidenceText(ev) {
    const parts = [];
    for (const [k, v] of Object.entries(ev || {})) {
      let s;
      if (typeof v === "number") s = String(Math.round(v * 1000) / 1000);
      else if (Array.isArray(v)) s = v.map((x) => (typeof x === "number" ? Math.round(x * 1000) / 1000 : x)).join(", ");
      else if (v && typeof v === "object") s = JSON.stringify(v);
      else s = String(v);
      parts.push(`${k.replace(/_/g, " ")}: ${s}`);
    }
    return parts.join("; ");
  }

  function cueSummary(c) {
    const when = timed(c) ? `${fmt(c.start)} to ${fmt(c.end ?? c.start)}` : "the whole clip";
    const strength = `strength ${(Number(c.strength) || 0).toFixed(2)}`;
    return `${c.id} ${c.modality}: ${c.text}; ${when}; ${strength}`;
  }

  function addCue(c) {
    if (!c || !c.id || cues.has(c.id)) return;
    cues.set(c.id, c);
    const track = document.querySelector(`.track.m-${CSS.escape(c.modality)}`);
    if (!track) return;
    const bar = document.createElement("button");
    bar.type = "button";
    bar.className = "cue";
    bar.dataset.testid = "cue";
    bar.dataset.cueId = c.id;
    bar.dataset.modality = c.modality;
    bar.dataset.timed = String(timed(c));
    bar.setAttribute("role", "listitem");
    bar.setAttribute("aria-label", cueSummary(c));
    bar.setAttribute("aria-describedby", "tip");
    bar.style.setProperty("--strength", String(Math.max(0, Math.min(1, Number(c.strength) || 0))));
    const tag = document.createElement("span");
    tag.className = "cue-id";
    tag.textContent = c.id;
    tag.setAttribute("aria-hidden", "true");
    bar.append(tag, document.createTextNode(c.text || ""));
    bar.addEventListener("mouseenter", () => { showTip(bar, c); lightSegmentsOf(c.id, true); });
    bar.addEventListener("mouseleave", () => { hideTip(); lightSegmentsOf(c.id, false); });
    bar.addEventListener("focus", () => { showTip(bar, c); lightSegmentsOf(c.id, true); });
    bar.addEventListener("blur", () => { hideTip(); lightSegmentsOf(c.id, false); });
    bar.addEventListener("click", () => seek(timed(c) ? c.start : 0));
    track.append(bar);
    layoutTrack(track);
  }

  // Bars over overlapping spans go on separate rows of their lane, so none hides another.
  function layoutTrack(track) {
    const d = duration();
    const bars = [...track.querySelectorAll(".cue")];
    const spans = bars.map((b) => {
      const c = cues.get(b.dataset.cueId);
      const s = timed(c) ? Math.max(0, c.start) : 0;
      const e = timed(c) ? Math.max(s, Number(c.end ?? c.start)) : d;
      return { b, s, e };
    }).sort((x, y) => x.s - y.s || x.e - y.e);
    const rowEnds = [];
    const minSpan = d * 0.012; // a zero-length cue still gets a visible bar
    for (const { b, s, e } of spans) {
      let row = rowEnds.findIndex((end) => end <= s);
      if (row < 0) row = rowEnds.push(0) - 1;
      rowEnds[row] = Math.max(e, s + minSpan);
      b.dataset.start = String(Math.round(s * 1000) / 1000);
      b.dataset.end = String(Math.round(e * 1000) / 1000);
      b.style.left = `${(s / d) * 100}%`;
      b.style.width = `${(Math.max(0, e - s) / d) * 100}%`;
      b.style.top = `${row * ROW_PX + 3}px`;
    }
    track.style.height = `${Math.max(1, rowEnds.length) * ROW_PX + 6}px`;
    track.classList.toggle("empty", bars.length === 0);
  }

  function relayout() {
    for (const t of document.querySelectorAll(".track")) layoutTrack(t);
    drawAxis();
    movePlayhead();
  }

  function drawAxis() {
    const axis = $("axis");
    axis.replaceChildren(document.createElement("span"));
    const scale = document.createElement("div");
    scale.className = "scale";
    const d = duration();
    const n = 4;
    for (let i = 0; i <= n; i++) {
      const t = document.createElement("span");
      t.style.left = `${(i / n) * 100}%`;
      t.textContent = `${((d * i) / n).toFixed(1)} s`;
      scale.append(t);
    }
    axis.append(scale);
  }

  function movePlayhead() {
    const pct = `${Math.min(100, ((player.currentTime || 0) / duration()) * 100)}%`;
    for (const h of document.querySelectorAll(".playhead")) h.style.left = pct;
  }

  function seek(t) {
    if (!Number.isFinite(t)) return;
    try {
      player.currentTime = Math.max(0, t);
    } catch (_) { /* no media loaded */ }
    movePlayhead();
  }

  const tip = $("tip");
  function showTip(el, c) {
    tip.replaceChildren();
    const head = document.createElement("strong");
    head.textContent = `${c.id} \u00b7 ${c.text}`;
    const when = document.createElement("div");
    when.textContent = timed(c) ? `${fmt(c.start)} \u2013 ${fmt(c.end ?? c.start)}` : "whole clip (no time span)";
    const st = document.createElement("div");
    st.textContent = `strength ${(Number(c.strength) || 0).toFixed(2)}`;
    tip.append(head, when, st);
    const ev = evidenceText(c.evidence);
    if (ev) {
      const e = document.createElement("div");
      e.className = "evidence";
      e.textContent = `evidence: ${ev}`;
      tip.append(e);
    }
    tip.hidden = false;
    const r = el.getBoundingClientRect();
    const w = Math.min(320, window.innerWidth - 16);
    tip.style.maxWidth = `${w}px`;
    const left = Math.min(Math.max(8, r.left + window.scrollX), window.scrollX + window.innerWidth - w - 8);
    tip.style.left = `${left}px`;
    tip.style.top = `${r.bottom + window.scrollY + 6}px`;
  }

  function hideTip() {
    tip.hidden = true;
  }

  function lightCues(ids, on) {
    const set = new Set(ids);
    for (const b of document.querySelectorAll(".cue")) {
      b.classList.toggle("lit", on && set.has(b.dataset.cueId));
    }
    $("timeline").classList.toggle("focused", on && set.size > 0);
  }

  function lightSegmentsOf(id, on) {
    for (const s of explanation.querySelectorAll(".seg")) {
      const cited = (s.dataset.cueIds || "").split(" ").includes(id);
      s.classList.toggle("lit", on && cited);
    }
  }

  // The first cited cue in time; a segment citing only untimed cues plays from the start.
  function firstStart(ids) {
    const starts = ids.map((i) => cues.get(i)).filter((c) => c && timed(c)).map((c) => c.start);
    return starts.length ? Math.min(...starts) : 0;
  }

  // -- explanation --------------------------------------------------------------------------------------------
  function segmentEl(seg) {
    const ids = (seg.cue_ids || []).filter((x) => typeof x === "string");
    const kind = seg.kind || "model_text";
    const el = document.createElement("span");
    el.className = `seg seg-${kind}`;
    el.dataset.testid = "segment";
    el.dataset.kind = kind;
    el.dataset.cueIds = ids.join(" ");
    if (kind === "absence") {
      const tag = document.createElement("span");
      tag.className = "kind-tag";
      tag.textContent = "not perceived";
      el.append(tag, " ");
    }
    el.append(document.createTextNode(String(seg.text || "")));
    if (ids.length) {
      el.tabIndex = 0;
      el.setAttribute("role", "button");
      el.title = `Cites ${ids.join(", ")}`;
      const on = () => { el.classList.add("lit"); lightCues(ids, true); };
      const off = () => { el.classList.remove("lit"); lightCues(ids, false); };
      const go = () => { on(); seek(firstStart(ids)); };
      el.addEventListener("mouseenter", () => { on(); if (player.paused) seek(firstStart(ids)); });
      el.addEventListener("mouseleave", off);
      el.addEventListener("focus", on);
      el.addEventListener("blur", off);
      el.addEventListener("click", go);
      el.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          go();
        }
      });
    }
    return el;
  }

  function onToken(text) {
    streamed += String(text || "");
    pending.textContent = streamed.slice(committed);
  }

  // A segment covers the text streamed just before it: that text leaves the plain run and becomes the segment.
  function onSegment(seg) {
    const rest = streamed.slice(committed);
    const text = String(seg.text || "");
    let at = text ? rest.indexOf(text) : -1;
    let len = text.length;
    if (at < 0 && text.trim()) {
      at = rest.indexOf(text.trim());
      len = text.trim().length;
    }
    if (at >= 0) {
      const before = rest.slice(0, at);
      if (before) explanation.insertBefore(document.createTextNode(before), pending);
      committed += at + len;
    } // else a segment with no tokens of its own (the pipeline's absence facts, its conclusion): add it as it is
    const prev = pending.previousSibling;
    if (prev && /[.!?;:,]$/.test(prev.textContent) && /^\S/.test(text)) { // "smiles.The voice" reads badly
      explanation.insertBefore(document.createTextNode(" "), pending);
    }
    explanation.insertBefore(segmentEl(seg), pending);
    segmentCount += 1;
    pending.textContent = streamed.slice(committed);
  }

  function renderSegments(segs) {
    explanation.replaceChildren();
    segmentCount = 0;
    streamed = "";
    committed = 0;
    pending = document.createTextNode("");
    explanation.append(pending);
    for (const s of segs) onSegment(s);
  }

  function onDone(answer) {
    for (const c of answer.cues || []) addCue(c);
    const segs = Array.isArray(answer.segments) ? answer.segments : [];
    // The answer's segments are the explanation: redraw from them unless the stream already drew exactly those.
    if (segs.length && (segs.length !== segmentCount || pending.textContent.trim())) renderSegments(segs);
    else if (!segs.length && !streamed.trim() && answer.explanation) onToken(answer.explanation);
    if (!pending.textContent.trim()) pending.textContent = "";
    for (const [m] of MODALITIES) {
      const track = document.querySelector(`.track.m-${m}`);
      if (track && !track.querySelector(".cue")) track.dataset.none = "no cues";
    }
    relayout();
    const secs = ((performance.now() - startedAt) / 1000).toFixed(1);
    const counts = MODALITIES.map(([m]) => `${[...cues.values()].filter((c) => c.modality === m).length} ${m}`);
    status(`Done in ${secs} s: ${counts.join(", ")} cues${answer.cached ? " (cached answer)" : ""}. ` +
           `Model: ${answer.model || "unknown"}.`);
    setState("done");
  }

  // -- talking to the server ----------------------------------------------------------------------------------
  function options() {
    const o = { type: "options" };
    const t = $("transcript-input").value.trim();
    if (t) o.transcript = t;
    const l = $("labels-input").value.trim();
    if (l) o.labels = l;
    const n = $("max-tokens-input").value.trim();
    if (n) o.max_tokens = n; // the server checks the range and says what is wrong
    const k = $("api-key-input").value.trim();
    if (k) o.api_key = k;
    return o;
  }

  async function analyze() {
    if (!clip || sock) return;
    resetOutput();
    clearError();
    player.src = clip.url;
    startedAt = performance.now();
    setState("uploading");
    status("Uploading\u2026");
    // One column (phone width): bring the result into view; the inputs are above it.
    if (!window.matchMedia("(min-width: 60rem)").matches) $("result-h").scrollIntoView({ block: "start" });
    const file = clip.file;
    const audioOnly = clip.audio;
    const s = new WebSocket(`${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/v1/stream`);
    sock = s;
    let errorFrame = null;
    let finished = false;
    s.onopen = async () => {
      try {
        s.send(JSON.stringify(options()));
        if (audioOnly) s.send(JSON.stringify({ type: "audio" }));
        for (let i = 0; i < file.size; i += CHUNK) {
          if (s.readyState !== WebSocket.OPEN) return;
          s.send(await file.slice(i, i + CHUNK).arrayBuffer());
          status(`Uploading ${Math.min(100, Math.round(((i + CHUNK) / file.size) * 100))}%\u2026`);
        }
        if (s.readyState !== WebSocket.OPEN) return;
        s.send(JSON.stringify({ type: "end" }));
        if (app.dataset.state === "uploading") {
          setState("analyzing");
          status("Perceiving cues\u2026");
        }
      } catch (_) { /* the close handler reports it */ }
    };
    s.onmessage = (m) => {
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch (_) {
        return;
      }
      if (ev.type === "label") {
        showLabel(ev);
        setState("streaming");
        status("Label ready; the explanation is streaming in\u2026");
      } else if (ev.type === "cue") addCue(ev);
      else if (ev.type === "token") onToken(ev.text);
      else if (ev.type === "segment") onSegment(ev);
      else if (ev.type === "done") {
        finished = true;
        onDone(ev.answer || {});
      } else if (ev.type === "error") errorFrame = ev;
    };
    s.onclose = (e) => {
      sock = null;
      if (finished) return;
      if (app.dataset.state === "cancelled") return;
      const code = e.code >= 4000 && e.code < 5000 ? e.code - 4000 : 0;
      showError(describeError(code || (errorFrame ? 500 : 0), errorFrame));
      status("No answer.");
      setState("error");
    };
  }

  function cancel() {
    if (!sock) return;
    try {
      sock.send(JSON.stringify({ type: "cancel" }));
    } catch (_) { /* already closing */ }
    sock.close(1000);
    status("Cancelled.");
    setState("cancelled");
  }

  $("analyze-button").addEventListener("click", analyze);
  $("cancel-button").addEventListener("click", cancel);
  for (const name of ["loadedmetadata", "durationchange"]) player.addEventListener(name, relayout);
  for (const name of ["timeupdate", "seeked"]) player.addEventListener(name, movePlayhead);
  window.addEventListener("resize", hideTip);

  // Auth on? /v1/models answers 401 without a key; then the key field is shown. Its label set fills the hint.
  fetch("/v1/models").then(async (r) => {
    if (r.status === 401) {
      $("key-row").hidden = false;
      return;
    }
    if (!r.ok) return;
    const body = await r.json();
    const labels = body && body.data && body.data[0] && body.data[0].labels;
    if (Array.isArray(labels) && labels.length) $("labels-input").placeholder = labels.join(", ");
  }).catch(() => {});

  resetOutput();
  showLimit();
  setState("idle");
  window.xemo = { describeError };
})();
