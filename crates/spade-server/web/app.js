// The painting page: a label map edited at the model's resolution, sent to
// /v1/synthesize as an 8-bit PNG of class ids.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  models: [],
  model: null,
  ids: null, // Uint8Array, width * height class ids
  width: 0,
  height: 0,
  current: 0,
  tool: "brush",
  undo: [],
  redo: [],
  latent: null, // from /v1/encode-style
  inflight: null, // AbortController of the running request
  liveTimer: null,
  resultUrl: null,
};
const HISTORY = 50;

// ---------- messages ----------
function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
}
function clearMessage() {
  $("message").hidden = true;
}

// ---------- server ----------
function authHeaders() {
  const key = $("api-key").value.trim();
  localStorage.setItem("spade-api-key", key);
  return key ? { "X-API-Key": key } : {};
}

async function problem(response) {
  try {
    const body = await response.json();
    return body.detail || body.title || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: authHeaders() });
  if (!response.ok) {
    showMessage(`Cannot list models: ${await problem(response)}`);
    return;
  }
  state.models = (await response.json()).models;
  const select = $("model");
  select.innerHTML = "";
  for (const m of state.models) {
    const option = new Option(`${m.name} (${m.width}×${m.height})`, m.name);
    select.append(option);
  }
  selectModel(state.models.find((m) => m.default) || state.models[0]);
}

function selectModel(model) {
  state.model = model;
  state.width = model.width;
  state.height = model.height;
  state.latent = null;
  const canvas = $("canvas");
  canvas.width = model.width;
  canvas.height = model.height;
  state.ids = new Uint8Array(model.width * model.height);
  const start = classNamed("sky-other") ?? classNamed("sky") ?? model.classes[0].id;
  state.ids.fill(start);
  state.undo = [];
  state.redo = [];
  $("style-upload").hidden = !model.has_encoder;
  $("clear-style").hidden = true;
  $("new-style").disabled = !model.use_vae;
  $("seed").disabled = !model.use_vae;
  buildPalette();
  setCurrent(classNamed("sea") ?? model.classes[Math.min(1, model.classes.length - 1)].id);
  render();
}

function classNamed(name) {
  const c = state.model.classes.find((c) => c.name === name);
  return c ? c.id : undefined;
}

// ---------- palette ----------
function buildPalette() {
  const palette = $("palette");
  palette.innerHTML = "";
  const filter = $("search").value.trim().toLowerCase();
  let group = null;
  for (const c of state.model.classes) {
    if (filter && !c.name.toLowerCase().includes(filter)) continue;
    if (c.group && c.group !== group) {
      group = c.group;
      const heading = document.createElement("h2");
      heading.textContent = group;
      palette.append(heading);
    }
    const button = document.createElement("button");
    button.className = "class" + (c.id === state.current ? " selected" : "");
    button.dataset.id = c.id;
    button.innerHTML = `<span class="swatch" style="background:${c.color}"></span>`;
    button.append(document.createTextNode(c.name));
    button.title = `id ${c.id}, ${c.color}`;
    button.addEventListener("click", () => setCurrent(c.id));
    palette.append(button);
  }
}

function setCurrent(id) {
  state.current = id;
  const c = state.model.classes[id];
  $("current-class").textContent = c ? `${c.name} (${c.id})` : `id ${id}`;
  for (const b of document.querySelectorAll(".class")) {
    b.classList.toggle("selected", Number(b.dataset.id) === id);
  }
  if (state.tool === "eraser") setTool("brush");
}

function setTool(tool) {
  state.tool = tool;
  for (const b of document.querySelectorAll(".tool")) {
    b.classList.toggle("active", b.dataset.tool === tool);
  }
}

// The class the eraser paints: unlabeled where the model has it, else the first class.
function eraserClass() {
  return classNamed("unlabeled") ?? state.model.classes[0].id;
}

// ---------- rendering ----------
function colorOf(id) {
  const c = state.model.classes[id];
  if (!c) return [255, 0, 255];
  const hex = c.color;
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

function render() {
  const { width, height, ids } = state;
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  const colors = state.model.classes.map((c) => colorOf(c.id));
  for (let p = 0; p < ids.length; p++) {
    const rgb = colors[ids[p]] || [255, 0, 255];
    image.data.set(rgb, p * 4);
    image.data[p * 4 + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

// ---------- editing ----------
function snapshot() {
  state.undo.push(state.ids.slice());
  if (state.undo.length > HISTORY) state.undo.shift();
  state.redo = [];
}

function undo() {
  if (!state.undo.length) return;
  state.redo.push(state.ids);
  state.ids = state.undo.pop();
  render();
  changed();
}

function redo() {
  if (!state.redo.length) return;
  state.undo.push(state.ids);
  state.ids = state.redo.pop();
  render();
  changed();
}

function toLabel(event) {
  const rect = $("canvas").getBoundingClientRect();
  return [
    Math.floor(((event.clientX - rect.left) / rect.width) * state.width),
    Math.floor(((event.clientY - rect.top) / rect.height) * state.height),
  ];
}

// Brush radius in label pixels: the slider is in screen-ish units of a 256-wide map.
function radius() {
  return Math.max(0.5, (Number($("size").value) * state.width) / 512);
}

function stamp(cx, cy, id) {
  const r = radius();
  const r2 = r * r;
  const { width, height, ids } = state;
  for (let y = Math.max(0, Math.floor(cy - r)); y <= Math.min(height - 1, Math.ceil(cy + r)); y++) {
    for (let x = Math.max(0, Math.floor(cx - r)); x <= Math.min(width - 1, Math.ceil(cx + r)); x++) {
      const dx = x - cx;
      const dy = y - cy;
      if (dx * dx + dy * dy <= r2 || (r < 1 && x === cx && y === cy)) ids[y * width + x] = id;
    }
  }
}

function line(a, b, id) {
  const steps = Math.max(1, Math.ceil(Math.hypot(b[0] - a[0], b[1] - a[1]) / Math.max(1, radius() / 2)));
  for (let i = 0; i <= steps; i++) {
    stamp(Math.round(a[0] + ((b[0] - a[0]) * i) / steps), Math.round(a[1] + ((b[1] - a[1]) * i) / steps), id);
  }
}

function fill(x, y, id) {
  const { width, height, ids } = state;
  const target = ids[y * width + x];
  if (target === id) return;
  const stack = [y * width + x];
  while (stack.length) {
    const p = stack.pop();
    if (ids[p] !== target) continue;
    ids[p] = id;
    const px = p % width;
    if (px > 0) stack.push(p - 1);
    if (px < width - 1) stack.push(p + 1);
    if (p >= width) stack.push(p - width);
    if (p < width * (height - 1)) stack.push(p + width);
  }
}

function setupCanvas() {
  const canvas = $("canvas");
  let last = null;
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    const point = toLabel(event);
    snapshot();
    if (state.tool === "fill") {
      fill(point[0], point[1], state.current);
      render();
      changed();
      return;
    }
    last = point;
    stamp(point[0], point[1], state.tool === "eraser" ? eraserClass() : state.current);
    render();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const point = toLabel(event);
    line(last, point, state.tool === "eraser" ? eraserClass() : state.current);
    last = point;
    render();
  });
  const end = () => {
    if (last) changed();
    last = null;
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
}

// ---------- PNG of ids ----------
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

// An 8-bit greyscale PNG whose pixel values are the class ids.
async function idsPng() {
  const { width, height, ids } = state;
  const raw = new Uint8Array((width + 1) * height);
  for (let y = 0; y < height; y++) raw.set(ids.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const zlib = new Uint8Array(await new Response(new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer());
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 0, 0, 0, 0], 8);
  const parts = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", header), chunk("IDAT", zlib), chunk("IEND", new Uint8Array())];
  return new Blob(parts, { type: "image/png" });
}

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// ---------- upload ----------
// Grey images are maps of ids; anything else is colour-coded and snapped to the palette.
async function uploadLabel(file) {
  const bitmap = await createImageBitmap(file);
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const data = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  let grey = true;
  for (let p = 0; p < data.length; p += 4) {
    if (data[p] !== data[p + 1] || data[p] !== data[p + 2]) {
      grey = false;
      break;
    }
  }
  const colors = state.model.classes.map((c) => colorOf(c.id));
  const source = new Uint8Array(bitmap.width * bitmap.height);
  let snapped = 0;
  for (let p = 0; p < source.length; p++) {
    const [r, g, b] = [data[p * 4], data[p * 4 + 1], data[p * 4 + 2]];
    if (grey) {
      source[p] = r === 255 ? (classNamed("unlabeled") ?? 255) : r;
      continue;
    }
    let best = 0;
    let bestDistance = Infinity;
    colors.forEach((c, id) => {
      const d = (c[0] - r) ** 2 + (c[1] - g) ** 2 + (c[2] - b) ** 2;
      if (d < bestDistance) [best, bestDistance] = [id, d];
    });
    if (bestDistance > 0) snapped++;
    source[p] = best;
  }
  snapshot();
  // Nearest-neighbour resize to the model's resolution.
  const { width, height } = state;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const sx = Math.min(bitmap.width - 1, Math.floor(((x + 0.5) * bitmap.width) / width));
      const sy = Math.min(bitmap.height - 1, Math.floor(((y + 0.5) * bitmap.height) / height));
      state.ids[y * width + x] = source[sy * bitmap.width + sx];
    }
  }
  render();
  if (snapped) {
    showMessage(`${snapped} pixels had colours outside the palette and were snapped to the nearest class.`, "warning");
  } else {
    clearMessage();
  }
  changed();
}

// ---------- generation ----------
function changed() {
  if (!$("live").checked) return;
  clearTimeout(state.liveTimer);
  state.liveTimer = setTimeout(generate, 400);
}

async function generate() {
  if (state.inflight) state.inflight.abort();
  const controller = new AbortController();
  state.inflight = controller;
  const png = await idsPng();
  const params = new URLSearchParams({ model: state.model.name, format: "png" });
  let request;
  if (state.latent) {
    const label = await blobBase64(png);
    request = { method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() }, body: JSON.stringify({ label, latent: state.latent, model: state.model.name }) };
  } else {
    if (state.model.use_vae) params.set("seed", $("seed").value || "0");
    request = { method: "POST", headers: { "Content-Type": "image/png", ...authHeaders() }, body: png };
  }
  const started = performance.now();
  $("generate").disabled = true;
  try {
    const response = await fetch(`/v1/synthesize?${params}`, { ...request, signal: controller.signal });
    if (!response.ok) {
      showMessage(`The server refused the request: ${await problem(response)}`);
      return;
    }
    const blob = await response.blob();
    if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
    state.resultUrl = URL.createObjectURL(blob);
    $("result").src = state.resultUrl;
    const link = $("download-result");
    link.href = state.resultUrl;
    link.hidden = false;
    const ms = Math.round(performance.now() - started);
    const timing = response.headers.get("server-timing") || "";
    $("stats").textContent = `${ms} ms (server: ${timing}; batch of ${response.headers.get("x-batch-size")}; seed ${response.headers.get("x-seed")})`;
    clearMessage();
  } catch (error) {
    if (error.name !== "AbortError") showMessage(`Could not reach the server: ${error.message}`);
  } finally {
    if (state.inflight === controller) {
      state.inflight = null;
      $("generate").disabled = false;
    }
  }
}

async function blobBase64(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

async function uploadStyle(file) {
  const response = await fetch(`/v1/encode-style?model=${encodeURIComponent(state.model.name)}&seed=${$("seed").value || 0}`, {
    method: "POST",
    headers: { "Content-Type": file.type || "application/octet-stream", ...authHeaders() },
    body: file,
  });
  if (!response.ok) {
    showMessage(`The style image was refused: ${await problem(response)}`);
    return;
  }
  state.latent = (await response.json()).latent;
  $("clear-style").hidden = false;
  clearMessage();
  generate();
}

// ---------- wiring ----------
function setup() {
  $("api-key").value = localStorage.getItem("spade-api-key") || "";
  $("api-key").addEventListener("change", loadModels);
  $("model").addEventListener("change", (e) => selectModel(state.models.find((m) => m.name === e.target.value)));
  $("search").addEventListener("input", buildPalette);
  for (const b of document.querySelectorAll(".tool")) b.addEventListener("click", () => setTool(b.dataset.tool));
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("clear").addEventListener("click", () => {
    snapshot();
    state.ids.fill(state.current);
    render();
    changed();
  });
  $("upload").addEventListener("change", (e) => e.target.files[0] && uploadLabel(e.target.files[0]).finally(() => (e.target.value = "")));
  $("download-ids").addEventListener("click", async () => download(await idsPng(), "label.png"));
  $("download-colors").addEventListener("click", () => $("canvas").toBlob((blob) => download(blob, "label_colors.png"), "image/png"));
  $("generate").addEventListener("click", generate);
  $("new-style").addEventListener("click", () => {
    $("seed").value = Math.floor(Math.random() * 2 ** 31);
    state.latent = null;
    $("clear-style").hidden = true;
    generate();
  });
  $("style").addEventListener("change", (e) => e.target.files[0] && uploadStyle(e.target.files[0]).finally(() => (e.target.value = "")));
  $("clear-style").addEventListener("click", () => {
    state.latent = null;
    $("clear-style").hidden = true;
    changed();
  });
  $("live").addEventListener("change", changed);
  document.addEventListener("keydown", (e) => {
    if (e.target.matches("input, select, textarea")) return;
    const key = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && key === "z") {
      e.preventDefault();
      e.shiftKey ? redo() : undo();
    } else if ((e.ctrlKey || e.metaKey) && key === "y") {
      e.preventDefault();
      redo();
    } else if (key === "b") setTool("brush");
    else if (key === "f") setTool("fill");
    else if (key === "e") setTool("eraser");
    else if (key === "g" || key === "enter") generate();
    else if (key === "n" && state.model.use_vae) $("new-style").click();
    else if (key === "[" || key === "]") $("size").value = Number($("size").value) + (key === "]" ? 2 : -2);
    else if (key === "/") {
      e.preventDefault();
      $("search").focus();
    }
  });
  setupCanvas();
  loadModels().catch((error) => showMessage(`Cannot reach the server: ${error.message}`));
}

setup();
