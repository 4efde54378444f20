// The page of `text2earth serve`: a Leaflet map (EPSG:3857), the job panel, the scene editor.
"use strict";
const WORLD_M = 40075016.686;
const $ = (id) => document.getElementById(id);
const state = { config: null, scenes: {}, overlays: {}, selected: null, job: null, painting: false };

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function showError(message) { $("error").textContent = message || ""; }

// ------------------------------------------------------------------ level: gsd and ground size
function levelInfo(level, lat) {
  const pixel = WORLD_M / (256 * 2 ** level);
  const nominal = 2 ** (17 - level);
  const ground = pixel * Math.cos((lat * Math.PI) / 180);
  const tile = state.config ? state.config.tile_px : 256;
  return `nominal gsd ${fmt(nominal)} m/px · ${fmt(pixel)} m/px on the map · ${fmt(ground)} m/px on the ground ` +
    `at ${lat.toFixed(2)}° · a ${tile}-px tile covers ${fmt((ground * tile) / 1000)} km`;
}
function fmt(x) { return x >= 100 ? x.toFixed(0) : String(Number(x.toPrecision(3))); }
function updateLevel() {
  const level = Number($("level").value);
  $("level-value").textContent = `L${level}`;
  $("level-info").textContent = levelInfo(level, map.getCenter().lat);
}

// ------------------------------------------------------------------ map
// Opens on the embedded Sentinel-2 scene (Virginia's Eastern Shore), outlined on the offline base map.
const map = L.map("map", { worldCopyJump: true }).setView([37.67, -75.62], 11);
const offline = L.tileLayer("/api/basemap/{z}/{x}/{y}.png", {
  maxZoom: 22, maxNativeZoom: 12, attribution: "offline land mask (GLOBE) · embedded scenes",
}).addTo(map);
map.on("moveend", updateLevel);
map.on("click", (event) => generate(event.latlng));

function sceneBounds(scene) {
  const b = scene.bounds;
  return L.latLngBounds([b.south, b.west], [b.north, b.east]);
}

function showScene(scene) {
  state.scenes[scene.id] = scene;
  const url = `${scene.files["scene.png"]}?v=${scene.version}`;
  let overlay = state.overlays[scene.id];
  if (overlay) {
    overlay.setUrl(url);
    overlay.setBounds(sceneBounds(scene));
  } else {
    overlay = L.imageOverlay(url, sceneBounds(scene), { interactive: true, className: `scene scene-${scene.id}` });
    overlay.on("click", (event) => { L.DomEvent.stopPropagation(event); selectScene(scene.id); });
    overlay.addTo(map);
    state.overlays[scene.id] = overlay;
  }
}

function selectScene(id) {
  for (const [key, overlay] of Object.entries(state.overlays)) {
    const el = overlay.getElement();
    if (el) el.classList.toggle("selected-scene", key === id);
  }
  state.selected = id;
  const scene = state.scenes[id];
  $("scene-panel").hidden = false;
  $("scene-info").textContent =
    `${scene.width} × ${scene.height} px at L${scene.level} · nominal gsd ${fmt(scene.nominal_gsd_m)} m · ` +
    `${fmt(scene.pixel_size_m)} m/px on the map · ${fmt(scene.ground_size_m)} m/px on the ground · ` +
    `“${scene.prompt}” · version ${scene.version}`;
  const links = Object.entries(scene.files).map(
    ([name, href]) => `<a id="download-${name.replace(/\./g, "-")}" href="${href}" download>${name}</a>`);
  $("downloads").innerHTML = links.join("") +
    (state.config.geo ? "" : "<span class='hint'>COG + STAC: install the [geo] extra</span>");
  loadMaskCanvas(scene);
}

// ------------------------------------------------------------------ jobs
async function submit(path, body) {
  showError("");
  if (state.job) { showError("wait for the running job, or cancel it"); return; }
  let job;
  try { job = await api("POST", path, body); } catch (error) { showError(error.message); return; }
  state.job = job;
  $("cancel").disabled = false;
  while (true) {
    $("progress").value = job.progress;
    $("status").textContent = `${job.op}: ${job.state} ${Math.round(job.progress * 100)}%`;
    if (!["queued", "running"].includes(job.state)) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
    try { job = await api("GET", `/api/jobs/${job.id}`); } catch (error) { showError(error.message); break; }
  }
  if (job.state === "failed") showError(job.message);
  if (job.state === "done") {
    const scene = await api("GET", `/api/scenes/${job.scene_id}`);
    showScene(scene);
    selectScene(scene.id);
  }
  // Last: "done" means the page already shows the result.
  state.job = null;
  $("cancel").disabled = true;
  $("status").textContent = `${job.op}: ${job.state}`;
}

function generate(latlng) {
  const wrapped = latlng.wrap();
  submit("/api/generate", {
    prompt: $("prompt").value, level: Number($("level").value), lat: wrapped.lat, lon: wrapped.lng,
    seed: Number($("seed").value),
  });
}

$("cancel").addEventListener("click", () => { if (state.job) api("DELETE", `/api/jobs/${state.job.id}`).catch(() => {}); });
for (const button of document.querySelectorAll(".grow button")) {
  button.addEventListener("click", () => submit("/api/extend", {
    scene_id: state.selected, direction: button.dataset.direction, seed: Number($("seed").value),
  }));
}
$("edit").addEventListener("click", () => submit("/api/edit", {
  scene_id: state.selected, prompt: $("edit-prompt").value, mask: mask.toDataURL("image/png"),
  seed: Number($("seed").value),
}));

// ------------------------------------------------------------------ mask painting (scene pixels)
const view = $("mask-canvas");
const mask = document.createElement("canvas");
let sceneImage = null;

function loadMaskCanvas(scene) {
  mask.width = scene.width; mask.height = scene.height;
  clearMask();
  const scale = Math.max(1, Math.floor(256 / Math.max(scene.width, scene.height)));
  view.width = scene.width * scale; view.height = scene.height * scale;
  sceneImage = new Image();
  sceneImage.onload = redraw;
  sceneImage.src = `${scene.files["scene.png"]}?v=${scene.version}`;
}
function clearMask() {
  const ctx = mask.getContext("2d");
  ctx.fillStyle = "black"; ctx.fillRect(0, 0, mask.width, mask.height);
  redraw();
}
function redraw() {
  const ctx = view.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  if (sceneImage && sceneImage.complete) ctx.drawImage(sceneImage, 0, 0, view.width, view.height);
  // The mask over the image: white strokes shown in translucent orange.
  const tint = document.createElement("canvas");
  tint.width = mask.width; tint.height = mask.height;
  const t = tint.getContext("2d");
  const pixels = mask.getContext("2d").getImageData(0, 0, mask.width, mask.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const on = pixels.data[i] > 127;
    pixels.data[i] = 255; pixels.data[i + 1] = 120; pixels.data[i + 2] = 20; pixels.data[i + 3] = on ? 150 : 0;
  }
  t.putImageData(pixels, 0, 0);
  ctx.drawImage(tint, 0, 0, view.width, view.height);
}
function paint(event) {
  const rect = view.getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * mask.width;
  const y = ((event.clientY - rect.top) / rect.height) * mask.height;
  const radius = (Number($("brush").value) / 256) * Math.max(mask.width, mask.height) / 2;
  const ctx = mask.getContext("2d");
  ctx.fillStyle = "white";
  ctx.beginPath(); ctx.arc(x, y, radius, 0, 2 * Math.PI); ctx.fill();
  redraw();
}
view.addEventListener("mousedown", (event) => { state.painting = true; paint(event); });
view.addEventListener("mousemove", (event) => { if (state.painting) paint(event); });
window.addEventListener("mouseup", () => { state.painting = false; });
$("clear-mask").addEventListener("click", clearMask);
$("level").addEventListener("input", updateLevel);

// ------------------------------------------------------------------ start
(async () => {
  state.config = await api("GET", "/api/config");
  if (state.config.basemap_url) {
    const online = L.tileLayer(state.config.basemap_url, { maxZoom: 22, attribution: "online base map" });
    map.removeLayer(offline);
    online.addTo(map);
    L.control.layers({ "online": online, "offline (shipped)": offline }).addTo(map);
  }
  updateLevel();
  for (const scene of await api("GET", "/api/scenes")) showScene(scene);
  document.body.dataset.ready = "1";
})().catch((error) => showError(error.message));
