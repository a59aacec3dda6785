// The live recognition page: webcam frames (or one photo) to POST /api/frame, answers drawn.
// Nothing is recomputed here: the letters, the hand box and the 21 landmarks come from Triton.
"use strict";

const config = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
const speller = new Speller(config.hold_ms, config.min_probability);
// The hand's bones: landmark index pairs (wrist 0, thumb 1-4, index 5-8, ... pinky 17-20).
const BONES = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 5], [5, 6], [6, 7], [7, 8], [5, 9], [9, 10],
  [10, 11], [11, 12], [9, 13], [13, 14], [14, 15], [15, 16], [13, 17], [0, 17], [17, 18],
  [18, 19], [19, 20]];
const state = { mode: "live", busy: false, stream: null, sent: [], frames: 0, photos: 0 };
window.aslPage = { state, speller, answers: [] };

function setTriton(ok, message) {
  const el = $("triton");
  el.dataset.state = ok ? "ready" : "down";
  el.textContent = ok ? "Triton ready" : `Triton is down: ${message} (retrying)`;
}

function setBusy(status) {
  // The page's own server refused (its connections all taken: uvicorn's plain-text 503), which
  // says nothing about Triton.
  const el = $("triton");
  el.dataset.state = "busy";
  el.textContent = `The page's server is busy (HTTP ${status}); retrying`;
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

function draw(canvas, width, height, answer) {
  // The overlay has the frame's own pixel size; CSS stretches it over the video or photo.
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  if (!answer || !answer.hand) return;
  ctx.lineWidth = Math.max(2, width / 160);
  if (answer.box) {
    const [x0, y0, x1, y1] = answer.box;
    ctx.strokeStyle = "rgba(255, 200, 0, 0.8)";
    ctx.strokeRect(x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height);
  }
  const points = answer.landmarks;
  if (!points) return;
  ctx.strokeStyle = "#00e0ff";
  for (const [a, b] of BONES) {
    ctx.beginPath();
    ctx.moveTo(points[a][0], points[a][1]);
    ctx.lineTo(points[b][0], points[b][1]);
    ctx.stroke();
  }
  ctx.fillStyle = "#ff3d7f";
  for (const [x, y] of points) {
    ctx.beginPath();
    ctx.arc(x, y, ctx.lineWidth * 1.5, 0, 2 * Math.PI);
    ctx.fill();
  }
}

function showAnswer(answer, rtt) {
  window.aslPage.answers.push(answer);
  $("rtt").textContent = rtt.toFixed(0);
  $("server-ms").textContent = answer.server_ms.toFixed(0);
  const next = $("next");
  next.replaceChildren();
  if (!answer.hand) {
    $("letter").textContent = "no hand";
    $("letter").classList.add("none");
    $("probability").textContent = "";
    return;
  }
  const [best, ...others] = answer.top;
  $("letter").textContent = best.label;
  $("letter").classList.remove("none");
  $("probability").textContent = `${(best.probability * 100).toFixed(1)} %`;
  for (const other of others.slice(0, 2)) {
    const item = document.createElement("li");
    item.textContent = `${other.label} ${(other.probability * 100).toFixed(1)} %`;
    next.append(item);
  }
}

// A frame without an answer: an earlier answer must not stay on show as if it were this
// one's, nor keep the held letter counting towards the spelled line.
function clearAnswer() {
  for (const id of ["letter", "rtt", "server-ms"]) $(id).textContent = "\u2013";
  $("letter").classList.add("none");
  $("probability").textContent = "";
  $("next").replaceChildren();
  speller.see(null, 0, performance.now());
}

// One frame or photo to the app; resolves to the answer (or null after showing why not).
// An answer that comes back once `current()` is false (a later photo was chosen, or the mode
// changed) is dropped unshown: a slow first photo's letter had replaced the second one's.
async function send(blob, current = () => true) {
  const start = performance.now();
  let response;
  try {
    response = await fetch("/api/frame", {
      method: "POST", body: blob, headers: { "Content-Type": blob.type || "image/jpeg" },
    });
  } catch (err) {
    if (!current()) return null;
    clearAnswer();
    setTriton(false, "the page's server is not answering");
    return null;
  }
  const rtt = performance.now() - start;
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!current()) return null;
  if (!response.ok) clearAnswer();
  if (response.status === 503 && body.triton === "down") {
    setTriton(false, body.error);
    return null;
  }
  if (!response.ok) {
    showError(body.error || `HTTP ${response.status}`);
    return null;
  }
  setTriton(true);
  showError("");
  showAnswer(body, rtt);
  return body;
}

function frameRate() {
  const now = performance.now();
  state.sent = state.sent.filter((t) => now - t < 2000);
  $("fps").textContent = (state.sent.length / 2).toFixed(1);
}

async function tick() {
  const video = $("video");
  if (state.mode !== "live" || state.busy || !video.videoWidth) return;
  state.busy = true;
  try {
    const scale = Math.min(1, config.max_side / Math.max(video.videoWidth, video.videoHeight));
    const width = Math.round(video.videoWidth * scale);
    const height = Math.round(video.videoHeight * scale);
    const grab = document.createElement("canvas");
    grab.width = width;
    grab.height = height;
    grab.getContext("2d").drawImage(video, 0, 0, width, height);
    const blob = await new Promise((done) => grab.toBlob(done, "image/jpeg", config.jpeg_quality));
    const answer = await send(blob, () => state.mode === "live");
    state.sent.push(performance.now());
    state.frames += 1;
    frameRate();
    draw($("live-overlay"), width, height, answer);
    if (answer) {
      const best = answer.hand ? answer.top[0] : null;
      if (speller.see(best && best.label, best ? best.probability : 0, performance.now())) {
        $("spelled").textContent = speller.text;
      }
    }
  } finally {
    state.busy = false;
  }
}

// Browsers offer getUserMedia only in a secure context: https, or http on localhost/127.0.0.1.
function cameraOffered() {
  return window.isSecureContext && Boolean(navigator.mediaDevices?.getUserMedia);
}

function cameraProblem(err) {
  if (!cameraOffered()) {
    const local = `http://127.0.0.1:${location.port || 80}/`;
    return `The browser gives the camera only to pages on localhost/127.0.0.1 or HTTPS, and ` +
      `this page is ${location.origin}: open ${local} on this machine (an SSH tunnel ` +
      `works), or serve it behind HTTPS. Photo mode works here.`;
  }
  if (err?.name === "NotAllowedError") return "The camera was refused: allow it, or use Photo mode.";
  if (err?.name === "NotFoundError") return "No camera found: use Photo mode.";
  return `No camera (${err?.name}): use Photo mode.`;
}

async function startCamera() {
  try {
    if (!cameraOffered()) throw new Error("no camera outside a secure context");
    state.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    $("video").srcObject = state.stream;
  } catch (err) {
    $("camera-message").hidden = false;
    $("camera-message").textContent = cameraProblem(err);
  }
}

async function sendPhoto(file) {
  if (!file) return;
  const chosen = ++state.photos;  // an earlier photo's answer, still to come, is not this one's
  const current = () => chosen === state.photos && state.mode === "photo";
  if (file.size > config.max_frame_bytes) {
    clearAnswer();
    showError(`${file.name} is ${file.size} bytes; the limit is ${config.max_frame_bytes}`);
    return;
  }
  const img = $("photo");
  img.src = URL.createObjectURL(file);
  img.hidden = false;
  await img.decode().catch(() => null);
  if (!current()) return;
  const answer = await send(file, current);
  if (!current()) return;
  draw($("photo-overlay"), img.naturalWidth || 1, img.naturalHeight || 1, answer);
}

function setMode(mode) {
  state.mode = mode;
  $("live-view").hidden = mode !== "live";
  $("photo-view").hidden = mode !== "photo";
  $("mode-live").classList.toggle("active", mode === "live");
  $("mode-photo").classList.toggle("active", mode === "photo");
  if (mode === "live" && !state.stream) startCamera();
}

async function pollHealth() {
  // While no frame flows (photo mode, no camera), the status line still follows Triton.
  if (state.mode === "live" && state.stream && state.sent.length) return;
  const response = await fetch("/api/health").catch(() => null);
  const body = response ? await response.json().catch(() => null) : {};
  if (body === null) return setBusy(response.status);  // not the app's JSON answer
  setTriton(body.triton === "ready", body.message || "the page's server is not answering");
}

$("mode-live").addEventListener("click", () => setMode("live"));
$("mode-photo").addEventListener("click", () => setMode("photo"));
$("file").addEventListener("change", (event) => sendPhoto(event.target.files[0]));
$("clear").addEventListener("click", () => { speller.clear(); $("spelled").textContent = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  sendPhoto(event.dataTransfer.files[0]);
});
setMode(new URLSearchParams(location.search).get("mode") === "photo" ? "photo" : "live");
setInterval(tick, config.frame_interval_ms);
setInterval(pollHealth, 2000);
pollHealth();
