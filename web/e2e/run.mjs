#!/usr/bin/env node
// End-to-end test: the real miLLM binary against the fake Hub, driven through
// the web UI in Debian's headless Chromium (playwright-core, no browser download).
//
// Environment:
//   MILLM_TARGET_DIR   cargo target folder (default: <repo>/target), relative to the repo root
//   MILLM_BIN          the server binary (default: $MILLM_TARGET_DIR/debug/millm)
//   MILLM_FAKE_HUB_BIN the fake Hub (default: $MILLM_TARGET_DIR/debug/examples/fake_hub)
//   MILLM_E2E_UI       "server" (the binary serves web/dist), "preview" (vite preview
//                      proxying to the binary) or "auto" (default: server if it serves
//                      the page at /, else preview)
//   CHROMIUM_PATH      the browser (default: /usr/bin/chromium)
//   E2E_HEADED=1       show the browser
// Prints "N passed, N failed" last; exits non-zero on any failure.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, createWriteStream } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const repoRoot = path.resolve(webDir, "..");
const targetDir = path.resolve(repoRoot, process.env.MILLM_TARGET_DIR || "target");
const millmBin = process.env.MILLM_BIN ? path.resolve(repoRoot, process.env.MILLM_BIN) : path.join(targetDir, "debug", "millm");
const fakeHubBin = process.env.MILLM_FAKE_HUB_BIN
  ? path.resolve(repoRoot, process.env.MILLM_FAKE_HUB_BIN)
  : path.join(targetDir, "debug", "examples", "fake_hub");
const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const artifacts = path.join(webDir, "e2e", "artifacts");
const uiMode = process.env.MILLM_E2E_UI || "auto";

const children = [];
const cleanups = [];
let passed = 0;
let failed = 0;

function log(...args) {
  console.log("[e2e]", ...args);
}

// ---------------------------------------------------------------- processes

function killChildren() {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill("SIGTERM");
      } catch {
        /* already gone */
      }
    }
  }
}

async function shutdown() {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch {
      /* best effort */
    }
  }
  killChildren();
  const deadline = Date.now() + 5000;
  while (children.some((c) => c.exitCode === null && c.signalCode === null) && Date.now() < deadline) {
    await sleep(100);
  }
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}

process.on("exit", killChildren);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    log(`got ${signal}, stopping`);
    await shutdown();
    process.exit(130);
  });
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

function start(name, command, args, env) {
  const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const logFile = createWriteStream(path.join(artifacts, `${name}.log`));
  child.stderr.pipe(logFile);
  child.on("exit", (code, signal) => log(`${name} exited (${signal ?? code})`));
  return { child, logFile };
}

/** Resolves with the first stdout line matching `re`; rejects on exit or timeout. */
function waitForLine(child, logFile, re, timeoutMs, name) {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error(`${name} printed no "${re}" line within ${timeoutMs / 1000}s`)), timeoutMs);
    let found = false;
    rl.on("line", (line) => {
      logFile.write(`[stdout] ${line}\n`);
      const m = !found && line.match(re);
      if (m) {
        found = true;
        clearTimeout(timer);
        resolve(m);
      }
    });
    child.on("exit", (code) => {
      if (!found) {
        clearTimeout(timer);
        reject(new Error(`${name} exited with ${code} before it was ready (see e2e/artifacts/${name}.log)`));
      }
    });
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function waitForHealth(base, child, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = "no answer";
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`millm exited with ${child.exitCode} (see e2e/artifacts/millm.log)`);
    try {
      const res = await fetch(`${base}/api/health`);
      if (res.status === 200) return res.json();
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = e.message;
    }
    await sleep(200);
  }
  throw new Error(`GET ${base}/api/health did not answer 200 within ${timeoutMs / 1000}s (last: ${last})`);
}

/** Does the server itself serve the web UI at `/`? */
async function serverServesUi(base) {
  try {
    const res = await fetch(`${base}/`);
    const text = await res.text();
    return res.ok && text.includes('id="root"');
  } catch {
    return false;
  }
}

async function startPreview(backend) {
  if (!existsSync(path.join(webDir, "dist", "index.html"))) {
    log("web/dist missing: building it");
    const r = spawnSync("npm", ["run", "build"], { cwd: webDir, stdio: "inherit" });
    if (r.status !== 0) throw new Error("npm run build failed");
  }
  process.env.MILLM_BACKEND = backend; // read by vite.config.ts's proxy
  const { preview } = await import("vite");
  const port = await freePort();
  const server = await preview({
    root: webDir,
    configFile: path.join(webDir, "vite.config.ts"),
    logLevel: "warn",
    preview: { host: "127.0.0.1", port, strictPort: true, open: false },
  });
  cleanups.push(() => server.close());
  return `http://127.0.0.1:${port}`;
}

// ---------------------------------------------------------------- test steps

let page;
let stepNo = 0;
/** The miLLM server the page talks to (for its /metrics). */
let serverBase;

async function shot(name) {
  stepNo += 1;
  const file = path.join(artifacts, `${String(stepNo).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true }).catch(() => {});
}

async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    passed += 1;
    log(`PASS ${name} (${((Date.now() - started) / 1000).toFixed(1)}s)`);
    await shot(name);
    return true;
  } catch (error) {
    failed += 1;
    log(`FAIL ${name}: ${error?.message?.split("\n").slice(0, 6).join("\n  ") ?? error}`);
    await shot(`${name}-failed`);
    return false;
  }
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/** The card of the model whose repo id is shown on it. */
function card(repoId) {
  return page.locator('[data-testid^="model-card-"]').filter({ hasText: repoId });
}

/** The card whose heading (the model's name) is `name`. */
function cardNamed(name) {
  return page.locator('[data-testid^="model-card-"]').filter({ has: page.getByRole("heading", { name, exact: true }) });
}

async function waitStatus(repoId, status, timeout) {
  await card(repoId).and(page.locator(`[data-status="${status}"]`)).waitFor({ state: "visible", timeout });
}

/** Records, from inside the page, whether an element ever appeared — even briefly. */
async function watchFor(testId) {
  await page.evaluate((id) => {
    window.__seen = window.__seen || {};
    window.__seen[id] = false;
    const check = () => {
      if (document.querySelector(`[data-testid="${id}"]`)) window.__seen[id] = true;
    };
    check();
    new MutationObserver(check).observe(document.body, { childList: true, subtree: true, attributes: true });
  }, testId);
}

const seen = (testId) => page.evaluate((id) => Boolean(window.__seen && window.__seen[id]), testId);

// ---------------------------------------------------------------- the chat

/** Sets the chat's settings (the Settings disclosure opens if closed). */
async function chatSettings(panel, { maxTokens, temperature }) {
  const settings = panel.locator("details.chat-settings");
  if (!(await settings.evaluate((d) => d.open))) await settings.locator("summary").click();
  if (maxTokens !== undefined) await panel.getByLabel("Max tokens").fill(String(maxTokens));
  if (temperature !== undefined) await panel.getByLabel("Temperature").fill(String(temperature));
}

/** Records, inside the page, every length the last answer's text takes while it streams. */
async function watchAnswerLengths() {
  await page.evaluate(() => {
    window.__lengths = [];
    const record = () => {
      const answers = document.querySelectorAll('[data-testid="chat-answer"]');
      const last = answers[answers.length - 1];
      if (!last || last.getAttribute("data-state") !== "streaming") return;
      const text = last.querySelector('[data-testid="chat-answer-text"]')?.textContent ?? "";
      const lengths = window.__lengths;
      if (lengths[lengths.length - 1] !== text.length) lengths.push(text.length);
    };
    window.__lengthObserver?.disconnect();
    window.__lengthObserver = new MutationObserver(record);
    window.__lengthObserver.observe(document.body, { childList: true, subtree: true, characterData: true, attributes: true });
  });
}

/** Generations the server counted as cancelled (their client went away), from /metrics. */
async function cancelledGenerations() {
  const text = await (await fetch(`${serverBase}/metrics`)).text();
  let total = 0;
  for (const m of text.matchAll(/^millm_inference_requests_total\{[^}]*outcome="cancelled"[^}]*\} (\d+)/gm)) total += Number(m[1]);
  return total;
}

const answerLengths = () => page.evaluate(() => window.__lengths.filter((n) => n > 0));

async function chatSteps(repoId) {
  const panel = page.getByTestId("chat-panel");
  const lastAnswer = () => panel.getByTestId("chat-answer").last();
  const lastAnswerText = async () => (await lastAnswer().getByTestId("chat-answer-text").textContent().catch(() => "")) ?? "";

  const opened = await step("chat-opens-from-the-loaded-card", async () => {
    await card(repoId).and(page.locator('[data-status="loaded"]')).getByRole("button", { name: "Chat", exact: true }).click();
    await panel.getByRole("heading", { name: /^Chat with / }).waitFor();
    const focused = await page.evaluate(() => document.activeElement?.id && document.querySelector(`label[for="${document.activeElement.id}"]`)?.textContent);
    expect(focused === "Message", `the Chat button left the focus on "${focused}", not the message box`);
  });
  if (!opened) return;

  await step("chat-streams-an-answer", async () => {
    await chatSettings(panel, { maxTokens: 120, temperature: 0.8 });
    const box = panel.getByRole("textbox", { name: "Message" });
    await watchAnswerLengths();
    await box.fill("Hello! Who are you?");
    await box.press("Enter");
    await panel.getByTestId("chat-question").filter({ hasText: "Hello! Who are you?" }).waitFor();
    await lastAnswer().and(page.locator('[data-state="done"],[data-state="stopped"]')).waitFor({ timeout: 120000 });
    const state = await lastAnswer().getAttribute("data-state");
    expect(state === "done", `the answer ended as "${state}"`);
    const text = await lastAnswerText();
    const lengths = await answerLengths();
    log(`answer: ${text.length} characters, seen at ${lengths.length} lengths while streaming`);
    expect(text.length > 0, "no text arrived");
    expect(lengths.length >= 2, `the text did not stream in (lengths seen: ${lengths.join(", ")})`);
    expect((await panel.getByRole("alert").count()) === 0, "the chat shows an error");
    const ttft = await panel.getByTestId("chat-ttft").innerText();
    const tps = await panel.getByTestId("chat-tps").innerText();
    log(`time to first token ${ttft}, ${tps} tokens/s`);
    expect(/\d/.test(ttft), `no time to first token: "${ttft}"`);
    expect(/^\d+(\.\d)?$/.test(tps), `no tokens/s from the usage: "${tps}"`);
    expect(await box.evaluate((el) => el === document.activeElement), "the message box lost the focus after sending");
  });

  await step("chat-stop-stops-the-generation", async () => {
    // A long answer, so that Stop comes before max tokens. Random weights may still pick </s>
    // within a few tokens: then the question is asked again (a few times at most).
    await chatSettings(panel, { maxTokens: 1500, temperature: 1 });
    const box = panel.getByRole("textbox", { name: "Message" });
    const stop = panel.getByRole("button", { name: "Stop", exact: true });
    const cancelledBefore = await cancelledGenerations();
    let stopped = false;
    for (let attempt = 1; attempt <= 5 && !stopped; attempt++) {
      await box.fill(`Tell me a very long story, please (${attempt}).`);
      await box.press("Enter");
      await stop.waitFor();
      const deadline = Date.now() + 60000;
      let state = "streaming";
      while (state === "streaming" && (await lastAnswerText()).length < 3) {
        expect(Date.now() < deadline, "no text arrived within 60s");
        await page.waitForTimeout(20);
        state = await lastAnswer().getAttribute("data-state");
      }
      if (state !== "streaming") {
        log(`attempt ${attempt}: the answer ended (${state}) before Stop could be pressed; asking again`);
        continue;
      }
      try {
        await stop.click({ timeout: 2000 });
      } catch {
        log(`attempt ${attempt}: the answer ended as Stop was pressed; asking again`);
        continue;
      }
      // The answer may still have finished in the same instant as the click.
      await lastAnswer().and(page.locator('[data-state="stopped"],[data-state="done"]')).waitFor({ timeout: 10000 });
      stopped = (await lastAnswer().getAttribute("data-state")) === "stopped";
      if (!stopped) log(`attempt ${attempt}: the answer finished as Stop was clicked; asking again`);
    }
    expect(stopped, "every answer ended before Stop could be pressed");
    const atStop = await lastAnswerText();
    await panel.getByRole("button", { name: "Send", exact: true }).waitFor();
    await shot("chat-stopped");
    await page.waitForTimeout(1500);
    const later = await lastAnswerText();
    expect(later === atStop, `the answer kept growing after Stop (${atStop.length} -> ${later.length} characters)`);
    log(`stopped after ${atStop.length} characters`);
    // The server stopped too: it counts a generation cancelled by its client going away.
    const metricsDeadline = Date.now() + 10000;
    while ((await cancelledGenerations()) <= cancelledBefore) {
      expect(Date.now() < metricsDeadline, "the server never counted the stopped generation as cancelled (/metrics)");
      await page.waitForTimeout(200);
    }
    // And its worker answers the next question.
    await chatSettings(panel, { maxTokens: 8 });
    const questions = await panel.getByTestId("chat-question").count();
    const started = Date.now();
    await box.fill("Short one.");
    await box.press("Enter");
    await lastAnswer().and(page.locator('[data-state="done"]')).waitFor({ timeout: 30000 });
    log(`the next answer came after ${Date.now() - started} ms`);
    expect((await panel.getByTestId("chat-question").count()) === questions + 1, "the conversation lost a question");
  });

  await step("chat-at-390px", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await card(repoId).and(page.locator('[data-status="loaded"]')).getByRole("button", { name: "Chat", exact: true }).click();
    const box = panel.getByRole("textbox", { name: "Message" });
    await box.waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow <= 1, `the page scrolls sideways by ${overflow}px at 390px`);
    for (const [what, locator] of [
      ["chat panel", panel],
      ["message box", box],
      ["Send button", panel.getByRole("button", { name: "Send", exact: true })],
    ]) {
      const b = await locator.boundingBox();
      expect(b && b.x >= 0 && b.x + b.width <= 391, `the ${what} does not fit 390px: ${JSON.stringify(b)}`);
    }
    // Keyboard: Tab goes from the message box to Send, with a visible focus ring.
    await box.focus();
    await page.keyboard.press("Tab");
    const onSend = await page.evaluate(() => document.activeElement?.textContent === "Send" && document.activeElement.matches(":focus-visible"));
    expect(onSend, "Tab from the message box does not reach Send with a visible focus");
    await chatSettings(panel, { maxTokens: 40 });
    await box.fill("And at 390 pixels?");
    await box.press("Enter");
    await lastAnswer().and(page.locator('[data-state="done"]')).waitFor({ timeout: 60000 });
    await lastAnswer().scrollIntoViewIfNeeded();
    await shot("chat-390px");
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await step("header-shows-tokens-per-second", async () => {
    // system:metrics every 2 s: the last minute's generations give a speed.
    await page.getByTestId("tokens-per-second").filter({ hasText: /\d+(\.\d)? tokens\/s/ }).waitFor({ timeout: 10000 });
  });
}

async function fillRepo(repoId) {
  const form = page.getByTestId("download-form");
  await form.getByLabel("Repository").fill(repoId);
  await form.getByLabel("Access token (optional)").fill("");
  return form;
}

async function run(uiBase) {
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: process.env.E2E_HEADED !== "1",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  cleanups.push(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(15000);
  const consoleErrors = [];
  page.on("console", (msg) => msg.type() === "error" && consoleErrors.push(msg.text()));
  page.on("pageerror", (err) => consoleErrors.push(String(err)));

  const TINY = "test-org/tiny-llama";
  const SLOW = "test-org/slow-llama";
  const GATED = "test-org/gated-llama";

  const loaded = await step("page-loads-and-goes-live", async () => {
    await page.goto(uiBase, { waitUntil: "domcontentloaded" });
    await page.getByRole("heading", { name: "miLLM", level: 1 }).waitFor();
    await page.locator('[data-testid="connection-state"][data-state="connected"]').waitFor({ timeout: 20000 });
    await page.getByTestId("device-name").filter({ hasNotText: "unknown" }).waitFor();
  });
  if (!loaded) return;

  await step("preview-tiny-llama", async () => {
    const form = await fillRepo(TINY);
    await form.getByRole("button", { name: "Preview", exact: true }).click();
    const preview = page.getByTestId("preview-card");
    await preview.waitFor({ timeout: 30000 });
    await preview.getByRole("heading", { name: /tiny-llama/i }).waitFor();
    const rows = await page.getByTestId("estimates-table").locator("tbody tr").count();
    expect(rows === 5, `expected 5 quantization rows, got ${rows}`);
    const files = await page.getByTestId("preview-files").locator("li").count();
    expect(files > 0, "the preview lists no files");
  });

  const downloaded = await step("download-tiny-llama-until-ready", async () => {
    await watchFor("download-progress");
    await page.getByTestId("download-form").getByRole("button", { name: "Download", exact: true }).click();
    await card(TINY).waitFor({ timeout: 30000 });
    await waitStatus(TINY, "ready", 120000);
    expect(await seen("download-progress"), "the download progress bar never appeared");
    const bars = await card(TINY).getByTestId("download-progress").count();
    expect(bars === 0, "a download progress bar is still shown on a ready model");
  });

  if (downloaded) {
    await step("ready-card-shows-memory-fit", async () => {
      await card(TINY).getByTestId("memory-fit").filter({ hasText: /needs .* free now/ }).waitFor();
    });

    const loadedOk = await step("load-tiny-llama", async () => {
      await card(TINY).getByRole("button", { name: "Load", exact: true }).click();
      await waitStatus(TINY, "loaded", 120000);
      const memory = card(TINY).getByTestId("model-memory");
      await memory.waitFor();
      const text = await memory.innerText();
      expect(/\d/.test(text) && /MB|GB/.test(text), `memory not shown: "${text}"`);
      expect((await card(TINY).getByRole("button", { name: "Delete", exact: true }).count()) === 0, "Delete offered on a loaded model");
    });

    if (loadedOk) {
      await step("load-of-another-model-asks-before-unloading", async () => {
        const form = await fillRepo(TINY);
        await form.getByLabel("Quantization").selectOption("Q8");
        await form.getByLabel("Display name (optional)").fill("tiny-q8");
        await form.getByRole("button", { name: "Download", exact: true }).click();
        const q8 = page
          .locator('[data-testid^="model-card-"]')
          .filter({ has: page.getByRole("heading", { name: "tiny-q8", exact: true }) });
        await q8.and(page.locator('[data-status="ready"]')).waitFor({ timeout: 120000 });
        await form.getByLabel("Quantization").selectOption("Q4");
        await q8.getByTestId("memory-fit").filter({ hasText: "once tiny-llama is unloaded" }).waitFor();
        await q8.getByRole("button", { name: "Load", exact: true }).click();
        const dialog = page.getByRole("dialog", { name: "Unload tiny-llama and load tiny-q8?" });
        await dialog.waitFor();
        await shot("switch-confirmation");
        await dialog.getByRole("button", { name: "Keep tiny-llama" }).click();
        await dialog.waitFor({ state: "detached" });
        await waitStatus(TINY, "loaded", 5000);
      });

      await step("lock-refuses-a-switch-until-unlocked", async () => {
        const tiny = cardNamed("tiny-llama");
        const q8 = cardNamed("tiny-q8");
        // Unlocked, it unloads when idle (IDLE_UNLOAD_SECONDS); locked, it stays.
        await tiny.getByTestId("idle-unload").filter({ hasText: /Unloads when idle at \d\d:\d\d/ }).waitFor();
        await tiny.getByRole("button", { name: "Lock", exact: true }).click();
        await tiny.getByTestId("model-locked").filter({ hasText: "Locked" }).waitFor();
        await tiny.getByTestId("idle-unload").waitFor({ state: "detached" });
        await tiny.getByRole("button", { name: "Unlock", exact: true }).waitFor();
        expect((await tiny.getByRole("button", { name: "Lock", exact: true }).count()) === 0, "Lock is still offered on a locked model");
        // Loading another model while one is locked: the page warns, and the server's refusal is shown.
        await q8.getByRole("button", { name: "Load", exact: true }).click();
        const dialog = page.getByRole("dialog", { name: "Unload tiny-llama and load tiny-q8?" });
        await dialog.getByTestId("switch-locked").waitFor();
        await dialog.getByRole("button", { name: "Unload and load" }).click();
        await page.getByRole("alert").filter({ hasText: "tiny-llama is locked in memory" }).first().waitFor({ timeout: 30000 });
        await shot("locked-refuses-switch");
        await tiny.and(page.locator('[data-status="loaded"]')).waitFor({ timeout: 5000 });
        expect((await q8.and(page.locator('[data-status="ready"]')).count()) === 1, "the refused load changed the other model");
        await tiny.getByRole("button", { name: "Unlock", exact: true }).click();
        await tiny.getByTestId("model-locked").waitFor({ state: "detached" });
        await tiny.getByRole("button", { name: "Lock", exact: true }).waitFor();
        await tiny.getByTestId("idle-unload").waitFor();
        await page.locator('[data-testid="toast"] button').evaluateAll((buttons) => buttons.forEach((b) => b.click()));
      });

      await step("delete-the-other-model", async () => {
        const q8 = cardNamed("tiny-q8");
        await q8.getByRole("button", { name: "Delete", exact: true }).click();
        await page.getByRole("dialog").getByRole("button", { name: "Delete model" }).click();
        await q8.waitFor({ state: "detached", timeout: 30000 });
      });

      await chatSteps(TINY);

      await step("unload-tiny-llama", async () => {
        await card(TINY).getByRole("button", { name: "Unload", exact: true }).click();
        await waitStatus(TINY, "ready", 60000);
      });
    }

    await step("delete-tiny-llama", async () => {
      await card(TINY).getByRole("button", { name: "Delete", exact: true }).click();
      const dialog = page.getByRole("dialog");
      await dialog.waitFor();
      await shot("delete-confirmation");
      await dialog.getByRole("button", { name: "Delete model" }).click();
      await card(TINY).waitFor({ state: "detached", timeout: 30000 });
    });
  }

  await step("cancel-slow-download", async () => {
    const form = await fillRepo(SLOW);
    await form.getByRole("button", { name: "Download", exact: true }).click();
    await waitStatus(SLOW, "downloading", 30000);
    await card(SLOW).getByTestId("download-progress").waitFor();
    // The bar moves with live events: two distinct, growing percentages above 0.
    const percent = card(SLOW).getByTestId("download-percent");
    const readPercent = async () => parseInt((await percent.textContent()) ?? "0", 10);
    const deadline = Date.now() + 30000;
    let first = 0;
    while ((first = await readPercent()) <= 0) {
      expect(Date.now() < deadline, "the download percent never rose above 0");
      await page.waitForTimeout(100);
    }
    let second = first;
    while ((second = await readPercent()) <= first) {
      expect(Date.now() < deadline, `the download percent stayed at ${first}%`);
      await page.waitForTimeout(100);
    }
    log(`progress moved ${first}% -> ${second}%`);
    await shot("slow-download-in-progress");
    await card(SLOW).getByRole("button", { name: "Cancel", exact: true }).click();
    await waitStatus(SLOW, "error", 30000);
    const message = card(SLOW).getByTestId("model-error");
    await message.filter({ hasText: "Download cancelled by user" }).waitFor();
    await card(SLOW).getByRole("button", { name: "Retry", exact: true }).waitFor();
  });

  await step("cancelled-download-offers-retry-with-token-not-load", async () => {
    const loads = await card(SLOW).getByRole("button", { name: "Load", exact: true }).count();
    expect(loads === 0, "Load is offered on a cancelled download");
    await card(SLOW).getByLabel("Hub token (optional)").waitFor();
  });

  await step("search-and-status-filter", async () => {
    const search = page.getByRole("searchbox", { name: "Search" });
    const status = page.getByRole("combobox", { name: "Status" });
    await search.fill("no-such-model");
    await page.getByTestId("models-empty").filter({ hasText: "No model matches" }).waitFor();
    await search.fill("SLOW-LL"); // case-insensitive substring of the repo id
    await card(SLOW).waitFor();
    await page.getByTestId("models-count").filter({ hasText: /^1 model found$/ }).waitFor();
    await status.selectOption("ready");
    await page.getByTestId("models-empty").waitFor();
    await status.selectOption("error");
    await card(SLOW).waitFor();
    await shot("search-and-filter");
    await search.fill("");
    await status.selectOption("");
    await page.getByTestId("models-count").filter({ hasText: /^\d+ models?$/ }).waitFor();
  });

  await step("retry-sends-the-token-typed-on-the-card", async () => {
    // The fake Hub, like the real one, refuses a token it does not know: the token reached it.
    await card(SLOW).getByLabel("Hub token (optional)").fill("hf_not_a_real_token");
    await card(SLOW).getByRole("button", { name: "Retry", exact: true }).click();
    await card(SLOW).getByTestId("model-error").filter({ hasText: /rejected the access token/i }).waitFor({ timeout: 30000 });
    // With a token it accepts, the download resumes.
    await card(SLOW).getByLabel("Hub token (optional)").fill("hf_fake_good_token");
    await card(SLOW).getByRole("button", { name: "Retry", exact: true }).click();
    await waitStatus(SLOW, "downloading", 30000);
    await card(SLOW).getByRole("button", { name: "Cancel", exact: true }).click();
    await waitStatus(SLOW, "error", 30000);
  });

  await step("gated-without-token-shows-toast", async () => {
    await page.locator('[data-testid="toast"] button').evaluateAll((buttons) => buttons.forEach((b) => b.click()));
    const form = await fillRepo(GATED);
    // As on the real Hub, a gated repo's metadata is public: the preview says it is gated.
    await form.getByRole("button", { name: "Preview", exact: true }).click();
    await page.getByTestId("preview-card").filter({ hasText: /gated/i }).waitFor({ timeout: 30000 });
    // Its files are not: the download is refused at once with the server's message.
    await form.getByRole("button", { name: "Download", exact: true }).click();
    await page.getByRole("alert").filter({ hasText: /gated/i }).first().waitFor({ timeout: 30000 });
    expect((await card(GATED).count()) === 0, "a record was created for a refused gated download");
  });

  await step("narrow-layout-390px", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole("heading", { name: "miLLM", level: 1 }).waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow <= 1, `the page scrolls sideways by ${overflow}px at 390px`);
  });

  if (consoleErrors.length) log(`browser console errors:\n  ${consoleErrors.slice(0, 10).join("\n  ")}`);
}

// ---------------------------------------------------------------- a server with an API key

/** A second server started with MILLM_API_KEY: the page asks for the key, then works with it. */
async function runWithKey(env) {
  const key = "e2e-key-correct-horse";
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "millm-e2e-key-"));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const keyed = start("millm-key", millmBin, ["serve"], { ...env, PORT: String(port), MILLM_DATA_DIR: dataDir, MILLM_API_KEY: key });
  keyed.child.stdout.on("data", (d) => keyed.logFile.write(d));
  const base = `http://127.0.0.1:${port}`;
  // Liveness needs no key; the server is up once it answers.
  const deadline = Date.now() + 60000;
  while (!(await fetch(`${base}/api/health/live`).then((r) => r.ok, () => false))) {
    if (Date.now() > deadline || keyed.child.exitCode !== null) throw new Error("the keyed server did not start");
    await sleep(200);
  }
  if (!(await serverServesUi(base))) {
    failed += 1;
    log("FAIL logs-in-with-a-key: the binary does not serve the web UI (build web/ before the binary)");
    return;
  }
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: process.env.E2E_HEADED !== "1", args: ["--no-sandbox", "--disable-gpu", "--no-first-run"] });
  cleanups.push(() => browser.close());
  page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  page.setDefaultTimeout(15000);
  await step("logs-in-with-a-key", async () => {
    await page.goto(base, { waitUntil: "domcontentloaded" });
    await page.getByTestId("api-key-prompt").waitFor();
    await page.getByLabel("API key", { exact: true }).fill("wrong");
    await page.getByRole("button", { name: "Unlock" }).click();
    // A wrong key is refused again: the prompt comes back after the reload.
    await page.getByTestId("api-key-prompt").waitFor();
    await page.getByLabel("API key", { exact: true }).fill(key);
    await page.getByRole("button", { name: "Unlock" }).click();
    await page.locator('[data-testid="connection-state"][data-state="connected"]').waitFor({ timeout: 20000 });
    await page.getByTestId("device-name").filter({ hasNotText: "unknown" }).waitFor();
    expect((await page.getByTestId("api-key-prompt").count()) === 0, "the prompt closed once the key was right");
  });
}

// ---------------------------------------------------------------- main

async function main() {
  rmSync(artifacts, { recursive: true, force: true });
  mkdirSync(artifacts, { recursive: true });

  const missing = [
    [millmBin, "the miLLM server (cargo build)"],
    [fakeHubBin, "the fake Hub (cargo build --examples)"],
    [chromiumPath, "Chromium (apt-get install -y chromium)"],
  ].filter(([p]) => !existsSync(p));
  if (missing.length) {
    for (const [p, what] of missing) console.error(`[e2e] missing ${what}: ${p}`);
    console.error("[e2e] build the binaries first (set MILLM_TARGET_DIR if cargo's target folder is elsewhere).");
    console.log("0 passed, 1 failed");
    process.exit(1);
  }

  const dataDir = mkdtempSync(path.join(os.tmpdir(), "millm-e2e-"));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));

  const hub = start("fake_hub", fakeHubBin, [], { ...process.env });
  const [, hubUrl] = await waitForLine(hub.child, hub.logFile, /^LISTENING (http:\/\/\S+)/, 30000, "fake_hub");
  log(`fake Hub at ${hubUrl}`);

  const port = await freePort();
  // An hour's idle unload: the loaded card says when (nothing is unloaded during the test).
  const env = { ...process.env, HOST: "127.0.0.1", PORT: String(port), MILLM_DATA_DIR: dataDir, HF_ENDPOINT: hubUrl, IDLE_UNLOAD_SECONDS: "3600" };
  delete env.HF_TOKEN; // the gated case must see no token
  const millm = start("millm", millmBin, ["serve"], env);
  millm.child.stdout.on("data", (d) => millm.logFile.write(d));
  const base = `http://127.0.0.1:${port}`;
  const health = await waitForHealth(base, millm.child, 60000);
  log(`millm at ${base} (device ${health?.data?.memory?.device ?? "?"})`);

  const useServer = uiMode === "server" || (uiMode === "auto" && (await serverServesUi(base)));
  const uiBase = useServer ? base : await startPreview(base);
  log(`UI at ${uiBase} (${useServer ? "served by millm" : "vite preview"})`);

  serverBase = base;
  await run(uiBase);
  await runWithKey(env);
}

try {
  await main();
} catch (error) {
  failed += 1;
  console.error(`[e2e] ${error?.stack ?? error}`);
}
await shutdown();
console.log(`screenshots: ${path.relative(process.cwd(), artifacts) || artifacts}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
