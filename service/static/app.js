// The adain web page: talks only to the public HTTP API (/v1/stylize, /v1/styles, /v1/videos).

const $ = (id) => document.getElementById(id);
const state = { content: null, mask: null, styles: [], resultUrl: null };  // styles: {file|id, name, thumb, weight}
const KEY_ITEM = "adain-api-key";  // in sessionStorage (this tab), or localStorage when "remember" is ticked

// The API key, when the server has keys (adain serve --api-keys): sent as "Authorization: Bearer KEY".
function loadKey() {
  const remembered = localStorage.getItem(KEY_ITEM);
  $("api-key").value = remembered ?? sessionStorage.getItem(KEY_ITEM) ?? "";
  $("remember-key").checked = remembered !== null;
}

function saveKey() {
  const key = $("api-key").value.trim();
  localStorage.removeItem(KEY_ITEM);
  sessionStorage.removeItem(KEY_ITEM);
  if (key) ($("remember-key").checked ? localStorage : sessionStorage).setItem(KEY_ITEM, key);
}

function api(url, options = {}) {
  const key = $("api-key").value.trim();
  return fetch(url, key ? { ...options, headers: { Authorization: `Bearer ${key}` } } : options);
}

// Thumbnails need the key too, which an <img src> cannot send: fetched, then shown as a blob: URL.
async function thumbnail(id) {
  const response = await api(`/v1/styles/${id}/thumbnail`);
  return response.ok ? URL.createObjectURL(await response.blob()) : "";
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function apiError(response) {
  try {
    const body = await response.json();
    if (response.status === 401) return `This server needs an API key: enter yours above. (${body.error.message})`;
    if (body && body.error && body.error.message) return `${body.error.message} (${response.status})`;
  } catch (_) { /* not JSON */ }
  return `The server answered ${response.status} ${response.statusText}`;
}

const CONTENT_HINT = "Drop a photo here or click to choose";

function setContent(file) {
  if (!file) return;
  state.content = file;
  showError("");
  const img = $("content-preview");
  if (img.src) URL.revokeObjectURL(img.src);
  img.hidden = true;
  $("content-hint").textContent = `Loading ${file.name}…`;
  $("content-hint").hidden = false;
  img.onload = () => { img.hidden = false; $("content-hint").hidden = true; };
  img.onerror = () => {  // say so at once; the server still judges it (it reads formats a browser cannot show)
    $("content-hint").textContent = `${file.name}: not an image this browser can show. ${CONTENT_HINT}`;
    showError(`${file.name} does not look like an image; choose a photo (JPEG, PNG or WebP).`);
  };
  img.src = URL.createObjectURL(file);
  updateStatus();
}

function clearResult() {
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = null;
  $("result").removeAttribute("src");
  $("result").hidden = true;
  $("download").removeAttribute("href");
  $("download").hidden = true;
}

// The API takes the uploaded files first, then the stored ids: the list keeps that order (an upload goes after the
// other uploads, a stored style last), so that the style numbered i in it is the one a mask's value i goes to.
function addStyle(entry) {
  const style = { weight: 1, ...entry };
  const uploads = state.styles.filter((s) => s.file).length;
  state.styles.splice(style.file ? uploads : state.styles.length, 0, style);
  renderStyles();
}

function renderStyles() {
  const list = $("style-list");
  list.replaceChildren();
  state.styles.forEach((style, index) => {
    const li = document.createElement("li");
    const number = document.createElement("span");
    number.className = "number";
    number.textContent = String(index);
    number.title = `mask value ${index} goes to this style`;
    const img = document.createElement("img");
    img.src = style.thumb;
    img.alt = style.name;
    const label = document.createElement("label");
    label.textContent = `${style.name} — weight `;
    const out = document.createElement("output");
    out.textContent = style.weight.toFixed(2);
    const slider = document.createElement("input");
    Object.assign(slider, { type: "range", min: 0, max: 1, step: 0.05, value: style.weight });
    slider.className = "weight";
    slider.setAttribute("aria-label", `weight of ${style.name}`);
    slider.disabled = Boolean(state.mask);  // a mask decides where each style goes: the API takes no weights then
    slider.title = slider.disabled ? "the mask decides where each style goes" : "";
    slider.addEventListener("input", () => { style.weight = Number(slider.value); out.textContent = style.weight.toFixed(2); });
    label.append(out, slider);
    const remove = document.createElement("button");
    remove.className = "remove";
    remove.type = "button";
    remove.textContent = "✕";
    remove.setAttribute("aria-label", `remove ${style.name}`);
    remove.addEventListener("click", () => { state.styles.splice(index, 1); renderStyles(); });
    li.append(number, img, label, remove);
    list.append(li);
  });
  updateStatus();
}

function updateStatus() {
  if (!$("status").classList.contains("pending")) {
    $("status").textContent = state.content && state.styles.length
      ? "Ready." : "Choose a photo and at least one style.";
  }
}

async function uploadToLibrary(file) {
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("name", file.name);
  const response = await api("/v1/styles", { method: "POST", body: form });
  if (!response.ok) throw new Error(await apiError(response));
  return response.json();
}

async function onStyleFiles(files) {
  showError("");
  for (const file of files) {
    if ($("save-styles").checked) {
      try {
        const stored = await uploadToLibrary(file);
        addStyle({ id: stored.id, name: stored.name || file.name, thumb: await thumbnail(stored.id) });
      } catch (err) {
        showError(err.message);
      }
    } else {
      addStyle({ file, name: file.name, thumb: URL.createObjectURL(file) });
    }
  }
  await loadLibrary();
}

async function loadLibrary() {
  const grid = $("library-grid");
  try {
    const response = await api("/v1/styles");
    if (!response.ok) throw new Error(await apiError(response));
    const body = await response.json();
    const styles = Array.isArray(body) ? body : (body.styles || []);
    grid.replaceChildren(...await Promise.all(styles.map(async (s) => {
      const button = document.createElement("button");
      button.type = "button";
      button.title = `${s.name} (${s.width}×${s.height})`;
      const img = document.createElement("img");
      img.src = await thumbnail(s.id);
      img.alt = s.name;
      button.append(img);
      button.addEventListener("click", () => addStyle({ id: s.id, name: s.name, thumb: img.src }));
      return button;
    })));
    $("library-empty").hidden = styles.length > 0;
  } catch (err) {
    showError(`Could not load the stored styles: ${err.message}`);
  }
}

function serverTiming(response) {
  const header = response.headers.get("Server-Timing") || "";
  return header.split(",").map((part) => part.trim()).filter(Boolean).map((part) => {
    const [name, ...params] = part.split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    return dur ? `${name.trim()} ${Number(dur.slice(4)).toFixed(0)} ms` : name.trim();
  }).join(", ");
}

async function stylize() {
  showError("");
  if (!state.content) { showError("Choose a content photo first."); return; }
  if (!state.styles.length) { showError("Add at least one style."); return; }
  const form = new FormData();
  form.append("content", state.content, state.content.name);
  // In the list's order, which is the API's (uploads, then stored ids; see addStyle), weights in the same order.
  state.styles.forEach((s) => (s.file ? form.append("style", s.file, s.file.name) : form.append("style_id", s.id)));
  if (!state.mask) state.styles.forEach((s) => form.append("weights", String(s.weight)));
  form.append("alpha", $("alpha").value);
  form.append("style_scale", $("style-scale").value);
  if ($("grain").value) form.append("grain", $("grain").value);  // else the server's
  form.append("preserve_color", $("preserve-color").value);
  form.append("content_size", $("content-size").value);
  if (state.mask) form.append("mask", state.mask, state.mask.name);
  form.append("format", "png");

  const button = $("go");
  button.disabled = true;
  $("status").className = "pending";
  $("status").textContent = "Stylizing…";
  const started = performance.now();
  try {
    let response;
    try {
      response = await api("/v1/stylize", { method: "POST", body: form });
    } catch (err) {
      throw new Error(`Could not reach the server (${err.message}).`);
    }
    if (!response.ok) throw new Error(await apiError(response));
    const blob = await response.blob();
    if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
    state.resultUrl = URL.createObjectURL(blob);
    const img = $("result");
    img.src = state.resultUrl;
    img.hidden = false;
    const link = $("download");
    link.href = state.resultUrl;
    link.hidden = false;
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const timing = serverTiming(response);
    $("status").className = "muted";
    $("status").textContent = `Done in ${seconds} s${timing ? ` (server: ${timing})` : ""}.`;
  } catch (err) {
    clearResult();  // the previous result and its Download link belong to other settings
    $("status").className = "muted";
    $("status").textContent = "Failed.";
    showError(err.message || String(err));
  } finally {
    button.disabled = false;
  }
}

function wireDrop(zone, onFile) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) onFile(e.dataTransfer.files[0]);
  });
}

$("content-input").addEventListener("change", (e) => setContent(e.target.files[0]));
wireDrop($("content-drop"), setContent);
$("style-input").addEventListener("change", (e) => { onStyleFiles([...e.target.files]); e.target.value = ""; });
$("mask-input").addEventListener("change", (e) => { state.mask = e.target.files[0] || null; renderStyles(); });
$("content-drop").addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("content-input").click(); }
});
$("alpha").addEventListener("input", (e) => { $("alpha-value").textContent = Number(e.target.value).toFixed(2); });
$("go").addEventListener("click", stylize);
$("api-key").addEventListener("input", saveKey);
$("remember-key").addEventListener("change", saveKey);
$("api-key").addEventListener("change", () => { showError(""); loadLibrary(); });
// ---- video: POST /v1/videos, then poll the job for its progress, then play the result ------------------------
const video = { job: null, url: null, timer: null };
const POLL_MS = 500;

function videoMessage(status, error = "") {
  $("video-status").textContent = status;
  $("video-error").textContent = error;
  $("video-error").hidden = !error;
}

function videoRunning(running) {
  $("go-video").disabled = running;
  $("cancel-video").hidden = !running;
}

async function stylizeVideo() {
  const clip = $("video-input").files[0];
  const uploads = state.styles.filter((s) => s.file);
  if (!clip) { videoMessage("", "Choose a clip first."); return; }
  if (!uploads.length) { videoMessage("", "Upload at least one style (stored styles are for images only)."); return; }
  const form = new FormData();
  form.append("clip", clip, clip.name);
  uploads.forEach((s) => { form.append("style", s.file, s.file.name); form.append("weights", String(s.weight)); });
  form.append("alpha", $("alpha").value);
  form.append("preserve_color", $("preserve-color").value);
  form.append("content_size", $("content-size").value);
  form.append("stability", $("stability").value);
  videoRunning(true);
  videoMessage("Uploading…");
  try {
    const response = await api("/v1/videos", { method: "POST", body: form });
    if (!response.ok) throw new Error(await apiError(response));
    video.job = await response.json();
    $("video-progress").value = 0;
    $("video-progress").hidden = false;
    pollVideo();
  } catch (err) {
    videoRunning(false);
    videoMessage("Failed.", err.message || String(err));
  }
}

async function pollVideo() {
  try {
    const response = await api(video.job.url);
    if (!response.ok) throw new Error(await apiError(response));
    const job = await response.json();
    $("video-progress").value = job.progress ?? 0;
    const frames = `${job.frames_done} of ${job.frames} frames`;
    if (job.state === "done") return showVideo(job);
    if (job.state === "failed" || job.state === "cancelled") {
      videoRunning(false);
      videoMessage(`${job.state === "failed" ? "Failed" : "Cancelled"} after ${frames}.`, job.error || "");
      return;
    }
    videoMessage(job.state === "queued" ? "Waiting for the video worker…" : `Stylizing: ${frames}.`);
    video.timer = setTimeout(pollVideo, POLL_MS);
  } catch (err) {
    videoRunning(false);
    videoMessage("Failed.", err.message || String(err));
  }
}

async function showVideo(job) {
  const response = await api(job.result_url);
  if (!response.ok) throw new Error(await apiError(response));
  if (video.url) URL.revokeObjectURL(video.url);
  video.url = URL.createObjectURL(await response.blob());
  $("video-result").src = video.url;
  $("video-result").hidden = false;
  $("video-download").href = video.url;
  $("video-download").hidden = false;
  videoRunning(false);
  videoMessage(`Done: ${job.frames} frames.`);
}

async function cancelVideo() {
  clearTimeout(video.timer);
  const response = await api(video.job.url, { method: "DELETE" });
  if (!response.ok) videoMessage("", await apiError(response));
  pollVideo();
}

$("go-video").addEventListener("click", stylizeVideo);
$("cancel-video").addEventListener("click", cancelVideo);
loadKey();
loadLibrary();
