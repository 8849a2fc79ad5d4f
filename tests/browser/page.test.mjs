// The painting page in a real browser (Debian's Chromium through playwright-core) against
// a real spade-server on loopback. Screenshots go to target/browser-artifacts/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { inflateSync } from "node:zlib";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const fixtures = resolve(root, process.env.SPADE_FIXTURES || "../shared/fixtures");
const artifacts = join(root, "target/browser-artifacts");
const serverBin = join(root, "target/debug/spade-server");
const port = 18000 + Math.floor(Math.random() * 2000);
const base = `http://127.0.0.1:${port}`;
let server;
let browser;

async function waitReady(url) {
  for (let i = 0; i < 600; i++) {
    try {
      if ((await fetch(`${url}/readyz`)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} never became ready`);
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  server = spawn(serverBin, ["--model", `coco=${fixtures}/gen_coco_eval`, "--model", `vae=${fixtures}/vae_eval`, "--listen", `127.0.0.1:${port}`], { stdio: "inherit" });
  await waitReady(base);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
});

async function openPage(viewport = { width: 1280, height: 800 }) {
  const page = await browser.newPage({ viewport, acceptDownloads: true });
  await page.goto(base);
  await page.waitForSelector(".class");
  return page;
}

// Pixel ids of an 8-bit grey PNG with filter type 0 rows (what the page writes).
function decodeIdsPng(bytes) {
  const width = bytes.readUInt32BE(16);
  const height = bytes.readUInt32BE(20);
  assert.deepEqual([bytes[24], bytes[25]], [8, 0], "8-bit greyscale");
  const idat = [];
  for (let at = 8; at < bytes.length; ) {
    const length = bytes.readUInt32BE(at);
    if (bytes.toString("latin1", at + 4, at + 8) === "IDAT") idat.push(bytes.subarray(at + 8, at + 8 + length));
    at += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const ids = [];
  for (let y = 0; y < height; y++) {
    assert.equal(raw[y * (width + 1)], 0, "filter type 0");
    ids.push(...raw.subarray(y * (width + 1) + 1, (y + 1) * (width + 1)));
  }
  return { width, height, ids };
}

async function displayedImage(page) {
  await page.waitForFunction(() => document.querySelector("#result").complete && document.querySelector("#result").naturalWidth > 0);
  const bytes = await page.evaluate(async () => {
    const response = await fetch(document.querySelector("#result").src);
    return Array.from(new Uint8Array(await response.arrayBuffer()));
  });
  return Buffer.from(bytes);
}

async function synthesize(pngBytes, query) {
  const response = await fetch(`${base}/v1/synthesize?${query}`, { method: "POST", headers: { "Content-Type": "image/png" }, body: pngBytes });
  assert.equal(response.status, 200);
  return Buffer.from(await response.arrayBuffer());
}

async function generateAndWait(page) {
  const done = page.waitForResponse((r) => r.url().includes("/v1/synthesize"));
  await page.click("#generate");
  return done;
}

test("paint, generate, and get exactly what the API returns for the same map", async () => {
  const page = await openPage();
  await page.fill("#search", "class 3");
  await page.click(".class >> text=class 3");
  await page.fill("#search", "");
  const box = await page.locator("#canvas").boundingBox();
  await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.3);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.8, box.y + box.height * 0.35, { steps: 12 });
  await page.mouse.up();
  await page.click(".class >> text=class 5");
  await page.keyboard.press("f");
  await page.mouse.click(box.x + box.width * 0.5, box.y + box.height * 0.9);
  await generateAndWait(page);
  const shown = await displayedImage(page);
  await page.screenshot({ path: join(artifacts, "painted-1280x800.png") });

  const download = page.waitForEvent("download");
  await page.click("#download-ids");
  const labelPng = readFileSync(await (await download).path());
  const { width, height, ids } = decodeIdsPng(labelPng);
  assert.deepEqual([width, height], [64, 64]);
  assert.ok(ids.includes(3), "the stroke is in the map");
  assert.ok(ids.includes(5), "the fill is in the map");
  const expected = await synthesize(labelPng, "model=coco&format=png");
  assert.ok(shown.equals(expected), "displayed image equals the API's image for the same map");

  // Undo removes the fill, redo brings it back.
  await page.keyboard.press("Control+z");
  const undone = await page.evaluate(() => Array.from(state.ids).includes(5));
  assert.equal(undone, false);
  await page.keyboard.press("Control+Shift+z");
  assert.equal(await page.evaluate(() => Array.from(state.ids).includes(5)), true);
  await page.close();
});

test("an uploaded label map is used as it is", async () => {
  const page = await openPage();
  const label = join(fixtures, "gen_coco_eval/label_1.png");
  await page.setInputFiles("#upload", label);
  await page.waitForFunction(() => state.undo.length === 1);
  await generateAndWait(page);
  const shown = await displayedImage(page);
  const expected = await synthesize(readFileSync(label), "model=coco");
  assert.ok(shown.equals(expected), "same image as posting the file itself");
  await page.close();
});

test("a VAE model takes a seed, and the same seed gives the same image", async () => {
  const page = await openPage({ width: 390, height: 844 });
  await page.selectOption("#model", "vae");
  await page.waitForFunction(() => state.model.name === "vae");
  assert.equal(await page.isVisible("#style-upload"), true);
  await page.fill("#seed", "7");
  await generateAndWait(page);
  const first = await displayedImage(page);
  await page.screenshot({ path: join(artifacts, "vae-phone-390x844.png"), fullPage: true });
  const download = page.waitForEvent("download");
  await page.click("#download-ids");
  const labelPng = readFileSync(await (await download).path());
  assert.ok(first.equals(await synthesize(labelPng, "model=vae&seed=7")));
  await page.close();
});

test("a refused request is explained to the user", async () => {
  const page = await openPage();
  // Ids beyond the model's classes (a grey map is read as ids): the server answers 422.
  const bad = await page.evaluate(async () => {
    state.ids.fill(200);
    const blob = await idsPng();
    return Array.from(new Uint8Array(await blob.arrayBuffer()));
  });
  assert.ok(bad.length > 0);
  const response = await generateAndWait(page);
  assert.equal(response.status(), 422);
  await page.waitForSelector("#message:not([hidden])");
  const text = await page.textContent("#message");
  assert.match(text, /refused.*id 200/);
  await page.screenshot({ path: join(artifacts, "error-shown.png") });
  await page.close();
});

test("colour label maps round-trip, and off-palette colours are snapped with a warning", async () => {
  const page = await openPage();
  const box = await page.locator("#canvas").boundingBox();
  await page.click(".class >> text=class 8");
  await page.mouse.click(box.x + box.width * 0.5, box.y + box.height * 0.5);
  const before = await page.evaluate(() => Array.from(state.ids));
  const download = page.waitForEvent("download");
  await page.click("#download-colors");
  const colourPng = readFileSync(await (await download).path());
  await page.click("#clear");
  await page.setInputFiles("#upload", { name: "colours.png", mimeType: "image/png", buffer: colourPng });
  await page.waitForFunction(() => state.undo.length === 3);
  assert.deepEqual(await page.evaluate(() => Array.from(state.ids)), before);
  assert.equal(await page.isHidden("#message"), true);

  const offPalette = await page.evaluate(async () => {
    const canvas = new OffscreenCanvas(32, 32);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "rgb(1, 130, 2)"; // next to class 1's #008000
    ctx.fillRect(0, 0, 32, 32);
    const blob = await canvas.convertToBlob({ type: "image/png" });
    return Array.from(new Uint8Array(await blob.arrayBuffer()));
  });
  await page.setInputFiles("#upload", { name: "off.png", mimeType: "image/png", buffer: Buffer.from(offPalette) });
  await page.waitForSelector("#message.warning:not([hidden])");
  assert.match(await page.textContent("#message"), /1024 pixels had colours outside the palette/);
  assert.ok(await page.evaluate(() => state.ids.every((id) => id === 1)));
  await page.close();
});

test("without flags the page opens on the bundled landscapes, classes named and coloured", async () => {
  const bundledPort = port + 1;
  const bundled = spawn(serverBin, ["--listen", `127.0.0.1:${bundledPort}`], { stdio: "inherit" });
  try {
    const url = `http://127.0.0.1:${bundledPort}`;
    await waitReady(url);
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(url);
    await page.waitForSelector(".class");
    assert.equal(await page.evaluate(() => state.model.name), "landscapes");
    const names = await page.$$eval(".class", (buttons) => buttons.map((b) => b.textContent));
    for (const name of ["sky", "cloud", "mountain", "snow", "tree", "sea", "sand"]) assert.ok(names.includes(name), name);
    const seaSwatch = await page.$eval(".class:has-text('sea') .swatch", (s) => getComputedStyle(s).backgroundColor);
    assert.equal(seaSwatch, "rgb(54, 62, 167)");
    // Paint a mountain ridge across the sky and fill the sea below it.
    const box = await page.locator("#canvas").boundingBox();
    await page.click(".class >> text=mountain");
    await page.keyboard.press("b");
    await page.mouse.move(box.x + 1, box.y + box.height * 0.5);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width - 1, box.y + box.height * 0.5, { steps: 16 });
    await page.mouse.up();
    await page.click(".class >> text=sea");
    await page.keyboard.press("f");
    await page.mouse.click(box.x + box.width * 0.5, box.y + box.height * 0.85);
    await generateAndWait(page);
    const shown = await displayedImage(page);
    assert.ok(shown.length > 1000, "an image came back");
    await page.screenshot({ path: join(artifacts, "landscapes-1280x800.png") });
    await page.close();
  } finally {
    bundled.kill("SIGTERM");
  }
});
