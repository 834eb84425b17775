// qwen3ttsd page: speak over the WebSocket into an AudioWorklet, manage saved voices, show
// status. Plain JS, same origin, nothing from the internet.
"use strict";

const RATE = 24000;                       // the WebSocket sends pcm16 mono at this rate
const MAX_UPLOAD = 10 * 1024 * 1024;      // the bridge's default max_upload_bytes
const MAX_ENCODE = 16 * 1024 * 1024 - 64 * 1024;  // messages.MAX_ENCODE_BYTES: ~5.8 min of pcm16
const WARM_AGAIN_S = 60;                  // a focus within this long of the last warm-up sends none
const $ = (id) => document.getElementById(id);

// Everything the page knows; window.qwen3tts.audio is read by the browser tests.
const S = {
  status: null,
  audio: {received: 0, played: 0},        // samples the worklet got / sent to the speakers
  ctx: null, node: null, ws: null,
  pcm: [], t0: 0, first: null, speaking: false,
  recorder: null, recorded: null,
  warm: {state: "cold", at: 0, result: null},  // POST /v1/audio/warmup, sent when the text box gets focus
};
window.qwen3tts = S;

// --- HTTP helpers -------------------------------------------------------------------------

function apiKey() { return $("api-key").value.trim(); }

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (apiKey()) h.Authorization = "Bearer " + apiKey();
  return h;
}

async function api(path, opts) {
  opts = opts || {};
  const r = await fetch(path, Object.assign({}, opts, {headers: authHeaders(opts.headers)}));
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { const j = await r.json(); msg = (j.error && j.error.message) || msg; } catch (_) { /* not JSON */ }
    const err = new Error(msg);
    err.status = r.status;
    throw err;
  }
  return r;
}

function showError(id, err) {
  const el = $(id);
  el.hidden = !err;
  el.textContent = err ? String(err.message || err) : "";
  if (err && (err.status === 401 || err.status === 403 && !apiKey())) {
    el.textContent = "This server needs an API key: enter it at the top right.";
    $("api-key").classList.add("needed");
  }
}

// --- status -----------------------------------------------------------------------------

const mb = (b) => (b == null ? "–" : (b / 1048576 >= 1024 ? (b / 1073741824).toFixed(1) + " GB"
                                                           : Math.round(b / 1048576) + " MB"));

function daemonLabel(d) {
  const a = d.activator;
  if (d.running === true) return [a && a.state === "starting" ? "starting…" : "running", "on"];
  if (d.running === false) return a && a.state === "failed" ? ["failed: " + a.status, "bad"] : ["idle (not running)", "off"];
  return ["socket-activated", "unknown"];
}

function renderStatus(s) {
  const d = s.daemon;
  const [label, cls] = daemonLabel(d);
  $("version").textContent = "v" + s.bridge.version;
  const pill = $("daemon-pill");
  pill.textContent = "daemon " + label;
  pill.className = "pill " + cls;
  $("st-daemon").textContent = label + (d.activator && d.activator.pid ? " (pid " + d.activator.pid + ")" : "");
  const det = d.running === false ? null : d.details;
  const loaded = det ? det.loaded : (d.models || []).filter((m) => m.loaded).map((m) => m.name);
  $("st-models").textContent = d.running === false ? "none" : (loaded && loaded.length ? loaded.join(", ") : "none");
  $("st-rss").textContent = det ? mb(det.rss_bytes) : "–";
  $("st-vram").textContent = det ? (det.vram_bytes == null ? "no GPU" : mb(det.vram_bytes)) : "–";
  const streams = (d.active_streams || 0) + (det && det.active_streams ? " bridge / " + det.active_streams + " daemon" : "");
  $("st-streams").textContent = streams;
  $("st-wyoming").textContent = s.bridge.wyoming || "off";
  $("st-age").textContent = d.checked_at ? new Date(d.checked_at * 1000).toLocaleTimeString() : "never asked";
  S.idleExitAt = det && det.idle_exit_at ? det.idle_exit_at - s.now + Date.now() / 1000 : null;
  tickIdle();
}

function tickIdle() {
  const el = $("st-idle");
  if (S.idleExitAt == null || !S.status || S.status.daemon.running === false) { el.textContent = "–"; return; }
  const left = Math.max(0, Math.round(S.idleExitAt - Date.now() / 1000));
  el.textContent = left > 0 ? "≈ " + left + " s" : "due (unless used since)";
}

async function loadStatus(refresh) {
  try {
    const r = await api("/v1/status" + (refresh ? "?refresh=1" : ""));
    S.status = await r.json();
    renderStatus(S.status);
    renderVoices(S.status.daemon);
    const re = S.status.daemon.refresh_error;
    showError("status-error", re ? new Error("the daemon did not answer: " + re) : null);
    $("api-key").classList.remove("needed");
  } catch (e) {
    showError("status-error", e);
  }
}

// --- voices -------------------------------------------------------------------------------

function option(value, label) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label || value;
  return o;
}

function renderVoices(d) {
  // rebuilt only when something changed: the status is polled and a user may be choosing
  const key = JSON.stringify([d.speakers, d.clones, d.languages, !!d.checked_at]);
  if (key === S.voicesKey) return;
  S.voicesKey = key;
  const sel = $("voice");
  const keep = sel.value;
  sel.textContent = "";
  const builtin = document.createElement("optgroup");
  builtin.label = "Built-in speakers";
  d.speakers.forEach((s) => builtin.appendChild(option(s)));
  sel.appendChild(builtin);
  if (d.clones.length) {
    const clones = document.createElement("optgroup");
    clones.label = "Saved voices";
    d.clones.forEach((c) => clones.appendChild(option(c.name)));
    sel.appendChild(clones);
  }
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : (d.speakers.includes("ryan") ? "ryan" : d.speakers[0]);

  const lang = $("language");
  const keepLang = lang.value;
  lang.textContent = "";
  lang.appendChild(option("auto"));
  d.languages.forEach((l) => lang.appendChild(option(l)));
  lang.value = keepLang || "auto";

  const list = $("voice-list");
  list.textContent = "";
  if (!d.clones.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = d.checked_at ? "no saved voices yet" : "no saved voices known yet (the daemon has not been asked)";
    list.appendChild(li);
  }
  d.clones.forEach((c) => {
    const li = document.createElement("li");
    li.dataset.voice = c.name;
    const name = document.createElement("strong");
    name.textContent = c.name;
    const info = document.createElement("span");
    info.className = "muted";
    info.textContent = (c.duration_s ? c.duration_s.toFixed(1) + " s" : "") + (c.ref_text ? " · “" + c.ref_text + "”" : "");
    const play = document.createElement("button");
    play.textContent = "▶ Preview";
    play.onclick = () => speak("Hello, this is the voice " + c.name + ".", c.name);
    const del = document.createElement("button");
    del.textContent = "Delete";
    del.className = "danger";
    del.onclick = () => deleteVoice(c.name);
    li.append(name, info, play, del);
    list.appendChild(li);
  });
}

async function deleteVoice(name) {
  if (!window.confirm("Delete the voice " + name + "?")) return;
  try {
    await api("/v1/audio/voices/" + encodeURIComponent(name), {method: "DELETE"});
    showError("voice-error", null);
  } catch (e) {
    showError("voice-error", e);
  }
  await loadStatus(true);
}

async function addVoice(ev) {
  ev.preventDefault();
  const file = $("voice-file").files[0];
  const clip = file || S.recorded;
  if (!clip) return showError("voice-error", new Error("choose a clip or record one"));
  if (clip.size > MAX_UPLOAD) return showError("voice-error", new Error("the clip is larger than 10 MB"));
  const form = new FormData();
  form.append("name", $("voice-name").value.trim());
  form.append("consent", $("voice-consent").value.trim());
  form.append("ref_text", $("voice-transcript").value.trim());
  form.append("file", clip, file ? file.name : "recording.webm");
  $("voice-add").disabled = true;
  $("voice-add").textContent = "Saving… (may start the daemon)";
  try {
    await api("/v1/audio/voices", {method: "POST", body: form});
    showError("voice-error", null);
    $("voice-form").reset();
    S.recorded = null;
    $("record-state").textContent = "";
  } catch (e) {
    showError("voice-error", e);
  } finally {
    $("voice-add").disabled = false;
    $("voice-add").textContent = "Save voice";
  }
  await loadStatus(true);
}

async function toggleRecord() {
  const btn = $("record-btn");
  if (S.recorder && S.recorder.state === "recording") { S.recorder.stop(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const chunks = [];
    S.recorder = new MediaRecorder(stream);
    S.recorder.ondataavailable = (e) => chunks.push(e.data);
    S.recorder.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      S.recorded = new Blob(chunks, {type: S.recorder.mimeType || "audio/webm"});
      $("voice-file").value = "";
      $("record-state").textContent = "recorded " + ((Date.now() - S.recStart) / 1000).toFixed(1) + " s";
      btn.textContent = "● Record again";
    };
    S.recStart = Date.now();
    S.recorder.start();
    btn.textContent = "■ Stop recording";
    $("record-state").textContent = "recording… read the transcript aloud (5–15 s)";
  } catch (e) {
    showError("voice-error", new Error("microphone: " + e.message));
  }
}

// --- speaking -----------------------------------------------------------------------------

async function audioGraph() {
  if (!S.ctx) {
    S.ctx = new AudioContext({sampleRate: RATE});
    await S.ctx.audioWorklet.addModule("/static/pcm-worklet.js");
    S.node = new AudioWorkletNode(S.ctx, "pcm-player", {outputChannelCount: [1]});
    S.node.port.onmessage = (e) => {
      S.audio.received = e.data.received;
      S.audio.played = e.data.played;
      if (e.data.done && !S.speaking) setState("done");
    };
    S.node.connect(S.ctx.destination);
  }
  if (S.ctx.state !== "running") await S.ctx.resume();
  S.node.port.postMessage({type: "reset"});
  S.audio.received = 0;
  S.audio.played = 0;
}

function setState(s) { $("stat-state").textContent = s; }

function wsUrl() {
  const u = new URL("/v1/audio/speech/stream", location.href);
  u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (apiKey()) u.searchParams.set("api_key", apiKey());
  return u.toString();
}

function stopSpeaking() {
  if (S.ws) { try { S.ws.send(JSON.stringify({type: "cancel"})); } catch (_) { /* closed */ } S.ws.close(); }
  S.ws = null;
  if (S.node) S.node.port.postMessage({type: "reset"});
  finishSpeaking("stopped");
}

function finishSpeaking(state) {
  S.speaking = false;
  $("speak-btn").disabled = false;
  $("stop-btn").disabled = true;
  $("download-btn").disabled = S.pcm.length === 0;
  if (state) setState(state);
}

async function speak(textOverride, voiceOverride) {
  const text = textOverride || $("text").value;
  if (!text.trim()) return showError("speak-error", new Error("type something to say"));
  if (S.speaking) stopSpeaking();
  showError("speak-error", null);
  await audioGraph();
  S.pcm = [];
  S.first = null;
  S.speaking = true;
  $("speak-btn").disabled = true;
  $("stop-btn").disabled = false;
  $("download-btn").disabled = true;
  ["stat-first", "stat-duration", "stat-rt"].forEach((id) => { $(id).textContent = "…"; });
  setState("connecting");
  const ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  S.ws = ws;
  const session = {type: "session.update", voice: voiceOverride || $("voice").value, language: $("language").value,
                   format: "pcm16", sample_rate: RATE, speed: parseFloat($("speed").value), audio_header: false};
  const instructions = $("instructions").value.trim();
  if (instructions) session.instructions = instructions;
  let configured = false;
  ws.onmessage = (e) => {
    if (ws !== S.ws) return;
    if (typeof e.data !== "string") return onAudio(e.data);
    const m = JSON.parse(e.data);
    if (m.type === "session" && !configured) {
      configured = true;
      ws.send(JSON.stringify(session));
      S.t0 = performance.now();
      ws.send(JSON.stringify({type: "text", text: text}));
      ws.send(JSON.stringify({type: "flush"}));
      setState("waiting for the first audio (the daemon may be starting)");
    } else if (m.type === "flushed") {
      S.node.port.postMessage({type: "end"});
      const secs = m.sent_ms / 1000;
      const wall = (performance.now() - S.t0) / 1000;
      $("stat-duration").textContent = secs.toFixed(2) + " s";
      $("stat-rt").textContent = wall > 0 ? (secs / wall).toFixed(2) + "× realtime" : "–";
      ws.close();
      S.ws = null;
      finishSpeaking("playing");
      loadStatus(true);  // the daemon just worked: asking it now wakes nothing
    } else if (m.type === "error") {
      showError("speak-error", new Error(m.message + (m.code ? " (" + m.code + ")" : "")));
      stopSpeaking();
      setState("error");
    }
  };
  ws.onclose = (e) => {
    if (ws !== S.ws) return;
    // a refused handshake (wrong API key, Host/Origin not allowed) closes with 1006 before "session"
    if (!configured && apiKey() !== "" && e.code === 1006) showError("speak-error", {status: 401});
    else showError("speak-error", new Error("the connection closed (" + e.code + (e.reason ? ": " + e.reason : "") + ")"));
    S.ws = null;
    finishSpeaking("error");
  };
}

function onAudio(buf) {
  if (!buf.byteLength) return;
  if (S.first === null) {
    S.first = performance.now() - S.t0;
    $("stat-first").textContent = Math.round(S.first) + " ms";
    setState("speaking");
  }
  S.pcm.push(new Uint8Array(buf.slice(0)));
  S.node.port.postMessage({type: "pcm", buffer: buf}, [buf]);
}

// --- download -----------------------------------------------------------------------------

function wavBlob(chunks) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const head = new DataView(new ArrayBuffer(44));
  const str = (o, s) => [...s].forEach((ch, i) => head.setUint8(o + i, ch.charCodeAt(0)));
  str(0, "RIFF"); head.setUint32(4, 36 + n, true); str(8, "WAVE"); str(12, "fmt ");
  head.setUint32(16, 16, true); head.setUint16(20, 1, true); head.setUint16(22, 1, true);
  head.setUint32(24, RATE, true); head.setUint32(28, RATE * 2, true); head.setUint16(32, 2, true);
  head.setUint16(34, 16, true); str(36, "data"); head.setUint32(40, n, true);
  return new Blob([head.buffer, ...chunks], {type: "audio/wav"});
}

async function download() {
  const fmt = $("format").value;
  let blob;
  try {
    if (fmt === "wav") {
      blob = wavBlob(S.pcm);
    } else {  // the audio that was heard, encoded by the server (never synthesized again)
      const pcm = new Blob(S.pcm);
      if (pcm.size > MAX_ENCODE) throw new Error("too long to encode on the server: download it as wav");
      $("download-btn").textContent = "Encoding…";
      const r = await api("/v1/audio/encode?format=" + encodeURIComponent(fmt), {
        method: "POST", body: pcm, headers: {"Content-Type": "application/octet-stream"}});
      blob = await r.blob();
    }
  } catch (e) {
    showError("speak-error", e);
    return;
  } finally {
    $("download-btn").textContent = "Download";
  }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "speech." + fmt;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// --- warm-up: the text box got focus, so speech is likely soon ------------------------------

async function warmUp() {
  const w = S.warm;
  if (w.state === "warming" || (w.state === "ready" && Date.now() / 1000 - w.at < WARM_AGAIN_S)) return;
  w.state = "warming";
  $("warm-state").textContent = "warming up…";
  const body = {voice: $("voice").value || undefined, language: $("language").value};
  if ($("instructions").value.trim()) body.instructions = $("instructions").value.trim();
  try {
    const r = await api("/v1/audio/warmup", {method: "POST", body: JSON.stringify(body),
                                             headers: {"Content-Type": "application/json"}});
    w.result = await r.json();
    w.state = "ready";
    w.at = Date.now() / 1000;
    $("warm-state").textContent = w.result.already_loaded ? "ready" : "ready (loaded in " + w.result.load_s.toFixed(1) + " s)";
  } catch (e) {
    w.state = "cold";  // speaking still works: it starts the daemon itself
    $("warm-state").textContent = "";
  }
}

// --- designing a voice from a description -------------------------------------------------

async function designVoice(ev) {
  ev.preventDefault();
  const body = {type: "prompt", name: $("design-name").value.trim(), prompt: $("design-prompt").value.trim()};
  const script = $("design-script").value.trim();
  if (script) body.script_hint = script;
  if ($("language").value !== "auto") body.language = $("language").value;
  $("design-btn").disabled = true;
  $("design-btn").textContent = "Designing… (loads two models)";
  try {
    await api("/v1/audio/voices", {method: "POST", body: JSON.stringify(body),
                                   headers: {"Content-Type": "application/json"}});
    showError("design-error", null);
    $("design-form").reset();
  } catch (e) {
    showError("design-error", e);
  } finally {
    $("design-btn").disabled = false;
    $("design-btn").textContent = "Design voice";
  }
  await loadStatus(true);
}

// --- wiring -------------------------------------------------------------------------------

function init() {
  $("api-key").value = localStorage.getItem("qwen3tts-api-key") || "";
  $("api-key").addEventListener("change", () => {
    localStorage.setItem("qwen3tts-api-key", apiKey());
    loadStatus(false);
  });
  $("speed").addEventListener("input", () => { $("speed-out").textContent = parseFloat($("speed").value).toFixed(2) + "×"; });
  $("speak-btn").addEventListener("click", () => speak());
  $("stop-btn").addEventListener("click", stopSpeaking);
  $("download-btn").addEventListener("click", download);
  $("refresh-btn").addEventListener("click", () => loadStatus(true));
  $("record-btn").addEventListener("click", toggleRecord);
  $("voice-form").addEventListener("submit", addVoice);
  $("design-form").addEventListener("submit", designVoice);
  $("text").addEventListener("focus", warmUp);   // never on page load: only when someone is about to type
  $("voice-file").addEventListener("change", () => { S.recorded = null; $("record-state").textContent = ""; });
  loadStatus(false);
  setInterval(() => loadStatus(false), 5000);   // bridge only: never wakes the daemon
  setInterval(tickIdle, 1000);
}

document.addEventListener("DOMContentLoaded", init);
