// maskconver serve: the page. Upload a photo to /v1/predict?include=panoptic, decode the COCO
// panoptic PNG (id = R + 256 G + 256^2 B) into an id map and draw the overlay here, so the
// opacity slider and the hover highlight need no further request.
"use strict";

const state = {
  ids: null, // Uint32Array [H * W] of segment ids (0 = void)
  width: 0,
  height: 0,
  segments: new Map(), // id -> segment record of the JSON
  rows: new Map(), // id -> <tr>
  active: 0, // highlighted segment id (0: none)
};

const $ = (id) => document.getElementById(id);
const MAX_ZOOM = 4; // small images are shown enlarged, up to this factor
const PAGE_CHROME_PX = 240; // room above the image (header, drop zone, controls)

function fitStage() {
  // the largest size that fits the column and the window; the overlay canvas follows (CSS)
  if (!state.width) return;
  const column = $("left").clientWidth;
  const room = Math.max(window.innerHeight - PAGE_CHROME_PX, 160);
  const zoom = Math.min(column / state.width, room / state.height, MAX_ZOOM);
  $("photo").style.width = `${Math.floor(state.width * zoom)}px`;
  $("photo").style.height = `${Math.floor(state.height * zoom)}px`;
}

function setStatus(text) {
  $("status").textContent = text;
}

async function loadModel() {
  try {
    const response = await fetch("/v1/model");
    const info = await response.json();
    $("model-info").textContent =
      `${info.name} · ${info.meta_architecture} (${info.backbone}) · ` +
      `${info.backend} · input ${info.input_size} · ${info.categories.length} categories`;
  } catch (err) {
    $("model-info").textContent = `model info unavailable: ${err}`;
  }
}

function decodeImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the browser cannot decode this image"));
    image.src = src;
  });
}

function idsFromPng(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(image, 0, 0);
  const rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const ids = new Uint32Array(canvas.width * canvas.height);
  for (let i = 0, p = 0; i < ids.length; i += 1, p += 4) {
    ids[i] = rgba[p] + 256 * rgba[p + 1] + 65536 * rgba[p + 2];
  }
  return ids;
}

function drawOverlay() {
  if (!state.ids) return;
  const canvas = $("overlay");
  const { width, height, ids, active } = state;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(width, height);
  const px = out.data;
  const alpha = Math.round(($("opacity").value / 100) * 255);
  const edges = $("edges").checked;
  const colors = new Map();
  for (const [id, seg] of state.segments) colors.set(id, seg.color);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const i = y * width + x;
      const id = ids[i];
      const p = 4 * i;
      const edge =
        edges &&
        ((x + 1 < width && ids[i + 1] !== id) || (y + 1 < height && ids[i + width] !== id));
      if (edge) {
        px[p] = px[p + 1] = px[p + 2] = 255;
        px[p + 3] = active && id !== active ? 96 : 255;
        continue;
      }
      const color = colors.get(id);
      if (!color) continue; // void: the photo shows through
      px[p] = color[0];
      px[p + 1] = color[1];
      px[p + 2] = color[2];
      if (!active) px[p + 3] = alpha;
      else px[p + 3] = id === active ? Math.max(alpha, 200) : Math.round(alpha * 0.25);
    }
  }
  ctx.putImageData(out, 0, 0);
  canvas.dataset.ready = "1";
}

function highlight(id) {
  if (id === state.active) return;
  const before = state.rows.get(state.active);
  if (before) before.classList.remove("active");
  state.active = id;
  const row = state.rows.get(id);
  if (row) row.classList.add("active");
  const seg = state.segments.get(id);
  $("hover").textContent = seg
    ? `#${seg.id} ${seg.category} · score ${seg.score.toFixed(3)} · ${seg.area} px`
    : "\u00a0";
  drawOverlay();
}

function cell(row, text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  row.appendChild(td);
  return td;
}

function swatch(color) {
  const span = document.createElement("span");
  span.className = "swatch";
  span.style.background = `rgb(${color[0]}, ${color[1]}, ${color[2]})`;
  return span;
}

function fillTables(segments) {
  const body = $("segments").querySelector("tbody");
  body.replaceChildren();
  state.rows.clear();
  state.segments.clear();
  const legend = new Map(); // category -> colour of its first segment
  for (const seg of segments) {
    state.segments.set(seg.id, seg);
    if (!legend.has(seg.category)) legend.set(seg.category, seg.color);
    const row = document.createElement("tr");
    row.dataset.segmentId = String(seg.id);
    cell(row, String(seg.id), true);
    const name = cell(row, "", false);
    name.append(swatch(seg.color), ` ${seg.category}`);
    cell(row, seg.isthing ? "thing" : "stuff", false);
    cell(row, seg.score.toFixed(3), true);
    cell(row, String(seg.area), true);
    cell(row, seg.bbox.join(", "), false);
    row.addEventListener("mouseenter", () => highlight(seg.id));
    row.addEventListener("mouseleave", () => highlight(0));
    body.appendChild(row);
    state.rows.set(seg.id, row);
  }
  const list = $("legend");
  list.replaceChildren();
  for (const [category, color] of legend) {
    const item = document.createElement("li");
    item.append(swatch(color), category);
    list.appendChild(item);
  }
}

async function predict(file) {
  if (!file) return;
  $("overlay").dataset.ready = "0";
  setStatus(`predicting ${file.name} (${Math.round(file.size / 1024)} KB)…`);
  const started = performance.now();
  const form = new FormData();
  form.append("file", file, file.name);
  let payload;
  try {
    const response = await fetch("/v1/predict?include=panoptic", { method: "POST", body: form });
    payload = await response.json();
    if (!response.ok) throw new Error(payload.error || `HTTP ${response.status}`);
  } catch (err) {
    setStatus(`error: ${err.message}`);
    return;
  }
  const roundTrip = performance.now() - started;
  const url = URL.createObjectURL(file);
  try {
    const [photo, panoptic] = await Promise.all([
      decodeImage(url),
      decodeImage(`data:image/png;base64,${payload.panoptic_png}`),
    ]);
    state.width = payload.width;
    state.height = payload.height;
    state.ids = idsFromPng(panoptic);
    state.active = 0;
    for (const canvas of [$("photo"), $("overlay")]) {
      canvas.width = payload.width;
      canvas.height = payload.height;
    }
    $("photo").getContext("2d").drawImage(photo, 0, 0, payload.width, payload.height);
    $("stage").hidden = false;
    fitStage();
    fillTables(payload.segments);
    drawOverlay();
  } catch (err) {
    setStatus(`error: ${err.message}`);
    return;
  } finally {
    URL.revokeObjectURL(url);
  }
  $("latency").textContent =
    `model ${payload.latency_ms.toFixed(1)} ms · round trip ${roundTrip.toFixed(0)} ms`;
  setStatus(
    `${file.name}: ${payload.width} × ${payload.height}, ${payload.segments.length} segments`,
  );
}

function segmentAt(event) {
  const canvas = $("overlay");
  const rect = canvas.getBoundingClientRect();
  const x = Math.floor(((event.clientX - rect.left) / rect.width) * state.width);
  const y = Math.floor(((event.clientY - rect.top) / rect.height) * state.height);
  if (!state.ids || x < 0 || y < 0 || x >= state.width || y >= state.height) return 0;
  return state.ids[y * state.width + x];
}

function init() {
  loadModel();
  const drop = $("drop");
  $("file").addEventListener("change", (e) => predict(e.target.files[0]));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    predict(e.dataTransfer.files[0]);
  });
  window.addEventListener("resize", fitStage);
  $("opacity").addEventListener("input", drawOverlay);
  $("edges").addEventListener("change", drawOverlay);
  const overlay = $("overlay");
  overlay.addEventListener("mousemove", (e) => highlight(segmentAt(e)));
  overlay.addEventListener("mouseleave", () => highlight(0));
}

document.addEventListener("DOMContentLoaded", init);
