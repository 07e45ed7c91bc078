// Drives the agent's dashboard in headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core (installed by tests/peers/install.sh into target/peers-node; pass its
// node_modules in NODE_PATH). Called by tests/dashboard.rs:
//
//   node e2e.cjs URL TOKEN ENTITY SCREENSHOT
//
// 1. opens URL with a fresh profile, waits until the event stream is live and prints "LIVE";
// 2. waits (no reload) until an open alert for ENTITY appears, prints "ALERT";
// 3. types TOKEN and a name, clicks Acknowledge, waits for "acknowledged by e2e-test";
// 4. clicks "Anomaly" on the first review-queue item, waits for "labelled", prints "LABELLED";
// 5. saves a full-page screenshot to SCREENSHOT and prints "DONE".
// Any failure: message on stderr, a screenshot next to SCREENSHOT (-failure.png), exit 1.
"use strict";
const { chromium } = require("playwright-core");
const fs = require("fs");
const os = require("os");
const path = require("path");

const [url, token, entity, screenshot] = process.argv.slice(2);
const TIMEOUT = 90_000;

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "vigil-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1400, height: 1000 },
  });
  const page = context.pages()[0] || (await context.newPage());
  // Offline plant network: any request that leaves the agent fails the test.
  const foreign = [];
  page.on("request", (r) => { if (!r.url().startsWith(url.replace(/\/$/, ""))) foreign.push(r.url()); });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  try {
    await page.goto(url, { timeout: TIMEOUT });
    await page.locator("#conn.ok").waitFor({ timeout: TIMEOUT });
    console.log("LIVE");
    const row = page.locator(`#alerts tr[data-entity="${entity}"]`);
    await row.waitFor({ timeout: TIMEOUT });
    console.log("ALERT " + (await row.innerText()).replace(/\s+/g, " "));
    await page.fill("#token", token);
    await page.fill("#by", "e2e-test");
    await row.locator("button.ack").click({ timeout: TIMEOUT });
    await page.locator(`#alerts tr[data-entity="${entity}"] td.acked`, { hasText: "acknowledged by e2e-test" }).waitFor({ timeout: TIMEOUT });
    console.log("ACKED " + (await page.locator("#ack-status").innerText()));
    const review = page.locator("#reviews tr[data-review]").first();
    await review.waitFor({ timeout: TIMEOUT });
    await review.locator('button.label[data-label="anomaly"]').click({ timeout: TIMEOUT });
    await page.locator("#review-status", { hasText: "labelled" }).waitFor({ timeout: TIMEOUT });
    console.log("LABELLED " + (await page.locator("#review-status").innerText()));
    await page.screenshot({ path: screenshot, fullPage: true });
    if (foreign.length) throw new Error("requests outside the agent: " + foreign.join(", "));
    if (errors.length) throw new Error("page errors: " + errors.join("; "));
    console.log("DONE");
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  } catch (e) {
    console.error("FAILED: " + (e && e.stack || e));
    for (const id of ["ack-status", "review-status", "review-count"]) {
      try { console.error(`#${id}: ` + (await page.locator("#" + id).innerText({ timeout: 1000 }))); } catch (_) {}
    }
    try { await page.screenshot({ path: screenshot.replace(/\.png$/, "") + "-failure.png", fullPage: true }); } catch (_) {}
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
    process.exit(1);
  }
})();
