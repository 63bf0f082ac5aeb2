// End-to-end test of the operator console (src/admin/console/) in Debian's headless
// Chromium, driven by playwright-core. Run by tests/it/console.rs against a real
// two-node cluster; by hand: scripts/browser.sh, then the environment below and
// `node tests/browser/console.test.mjs`.
//
// Environment:
//   ADMIN_URL            the console of node 1, e.g. http://127.0.0.1:PORT/admin/
//   ADMIN_NAME, ADMIN_PASSWORD    an operator with role admin
//   VIEWER_NAME, VIEWER_PASSWORD  an operator with role viewer
//   PLAYER               username of a player connected to node 2
//   NODE2                node 2's id (the player's session must show it)
//   SHOTS_DIR            where the screenshots (NN-step.png) go
//   MUTE_REASON, BAN_REASON       reasons typed into the forms (defaults below)
//   XSS_PLAYER           optional: username of a player whose names hold HTML
//   XSS_DISPLAY          optional: that player's session display name
//
// Control channel: at each step the Rust side must check on the player's WebSocket,
// this script prints one JSON line on stdout ({"step":"muted",…}, {"step":"banned",…})
// and waits for a line `ok` on stdin (anything else fails the test with that text).
// Nothing else goes to stdout: progress goes to stderr. Last line {"step":"done"}.
// Exit code 0 on success, 1 on any failure (with {"step":"failed","error":…}).
//
// Fails on: a JavaScript dialog (alert/confirm/prompt: an injected script ran), a
// request to anything but the node, a console error (a failed API answer the page
// shows, 4xx from /admin/v1/, is the only one allowed), an uncaught page error.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import readline from "node:readline";

const STEP_TIMEOUT_MS = 15_000;
const CONTROL_TIMEOUT_MS = 60_000;

function need(name) {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is not set`);
  return value;
}

const log = (...args) => console.error("[console.test]", ...args);
const emit = (value) => process.stdout.write(JSON.stringify(value) + "\n");

// --- the control channel ------------------------------------------------------

const input = readline.createInterface({ input: process.stdin, terminal: false });
const lines = input[Symbol.asyncIterator]();

/** Tells the Rust side a step is done and waits for its `ok`. */
async function step(name, extra = {}) {
  emit({ step: name, ...extra });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer to step ${name} within ${CONTROL_TIMEOUT_MS} ms`)), CONTROL_TIMEOUT_MS);
  });
  try {
    const { value, done } = await Promise.race([lines.next(), timeout]);
    if (done) throw new Error(`control channel closed at step ${name}`);
    if (value.trim() !== "ok") throw new Error(`step ${name} refused by the Rust side: ${value.trim()}`);
  } finally {
    clearTimeout(timer);
  }
  log(`step ${name}: ok`);
}

// --- the page -----------------------------------------------------------------

const sel = (test) => `[data-test="${test}"]`;

async function main() {
  const adminUrl = need("ADMIN_URL");
  const origin = new URL(adminUrl).origin;
  const admin = { name: need("ADMIN_NAME"), password: need("ADMIN_PASSWORD") };
  const viewer = { name: need("VIEWER_NAME"), password: need("VIEWER_PASSWORD") };
  const player = need("PLAYER");
  const node2 = need("NODE2");
  const shotsDir = need("SHOTS_DIR");
  const muteReason = process.env.MUTE_REASON || "Spamming global chat (console test)";
  const banReason = process.env.BAN_REASON || "Slurs in global chat (console test)";
  const xssPlayer = process.env.XSS_PLAYER || "";
  const xssDisplay = process.env.XSS_DISPLAY || "";
  mkdirSync(shotsDir, { recursive: true });

  const problems = [];
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
    ],
  });
  let page;
  let shot = 0;
  const screenshot = async (name) => {
    shot += 1;
    const path = join(shotsDir, `${String(shot).padStart(2, "0")}-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    log(`screenshot ${path}`);
  };
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);

    // Everything the page asks for must come from the node itself.
    context.on("request", (request) => {
      const url = request.url();
      let requestOrigin;
      try {
        requestOrigin = new URL(url).origin;
      } catch {
        requestOrigin = "(unparsable)";
      }
      if (requestOrigin !== origin) problems.push(`request to another host: ${url}`);
    });
    // An injected script that runs shows up as a dialog: the payloads call alert().
    page.on("dialog", async (dialog) => {
      problems.push(`a ${dialog.type()} dialog opened: ${dialog.message()}`);
      await dialog.dismiss().catch(() => {});
    });
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() !== "error") return;
      const text = message.text();
      const at = message.location().url || "";
      // Chromium logs every 4xx a fetch gets; the API's refusals (401 before sign-in,
      // 403 for a viewer) are answers the page shows, not faults.
      // So is the 404 of the browser's own /favicon.ico probe: the console has no icon
      // (a data: icon would break its CSP, and it is three files).
      const refused = /^Failed to load resource: the server responded with a status of 4\d\d/.test(text);
      const apiRefusal = refused && at.startsWith(`${origin}/admin/v1/`);
      const faviconProbe = refused && at === `${origin}/favicon.ico`;
      if (!apiRefusal && !faviconProbe) problems.push(`console error: ${text} (${at})`);
    });
    const checkProblems = () => {
      if (problems.length) throw new Error(problems.join("; "));
    };

    const signIn = async (who) => {
      await page.locator(sel("signin")).waitFor({ state: "visible" });
      await page.fill(sel("signin-name"), who.name);
      await page.fill(sel("signin-password"), who.password);
      await page.click(sel("signin-submit"));
      await expectText(page.locator(sel("whoami")), who.name);
      log(`signed in as ${who.name} (${await page.textContent(sel("role"))})`);
    };

    /** Finds `username` in the search and opens its 360 page. */
    const openPlayer = async (username) => {
      await page.click(sel("nav-players"));
      const link = page.locator(sel("player-link")).filter({ hasText: username });
      // The view may still be drawing when the search is typed (and redraw over
      // it): search again until the player is listed.
      await poll(async () => {
        await page.locator(sel("search-input")).waitFor({ state: "visible" });
        await page.fill(sel("search-input"), username);
        await page.click(sel("search-submit"));
        try {
          await link.first().waitFor({ state: "visible", timeout: 2000 });
          return true;
        } catch {
          return await page.inputValue(sel("search-input"));
        }
      }, `the search to list ${username}`);
      const texts = await page.locator(sel("player-link")).allTextContents();
      if (!texts.includes(username)) throw new Error(`search for ${username} lists ${JSON.stringify(texts)}`);
      await page.locator(sel("player-link")).nth(texts.indexOf(username)).click();
      await expectText(page.locator(sel("player-name")), username);
    };

    // 1. The admin signs in (the page first asks /session, which answers 401).
    await page.goto(adminUrl);
    await page.locator(sel("signin")).waitFor({ state: "visible" });
    await screenshot("signin");
    await signIn(admin);
    if (await page.locator(sel("nav-operators")).isHidden()) throw new Error("an admin does not see the operators view");

    // 2. Finds the player and opens the 360 page: a session on node 2.
    await openPlayer(player);
    await screenshot("search");
    await waitForSession(page, player, node2);
    await screenshot("player");

    // 3. Mutes for an hour: the player's next global_chat must get MUTED.
    await act(page, "mute", muteReason, "3600");
    await expectText(page.locator(sel("mute-reason")), muteReason);
    await page.locator(sel("flash")).filter({ hasText: "Muted" }).waitFor({ state: "visible" });
    await screenshot("muted");
    await step("muted", { player, reason: muteReason, duration_secs: 3600 });

    // 4. Bans permanently: the player's session on node 2 must get `Account banned`.
    await act(page, "ban", banReason, "permanent");
    await expectText(page.locator(sel("ban-reason")), banReason);
    await page.locator(sel("flash")).filter({ hasText: "Banned" }).waitFor({ state: "visible" });
    await screenshot("banned");
    await step("banned", { player, reason: banReason, duration_secs: null });

    // 5. The audit log, filtered by the player, shows both actions.
    await page.click(sel("nav-audit"));
    await page.locator(sel("audit-filter")).waitFor({ state: "visible" });
    await page.fill(sel("audit-player"), player);
    await page.click(sel("audit-apply"));
    const wanted = [
      ["ban", player, banReason, "ok"],
      ["mute", player, muteReason, "ok"],
    ];
    await poll(async () => {
      const rows = await auditRows(page);
      return wanted.every((w) => rows.some((r) => JSON.stringify(r) === JSON.stringify(w))) || rows;
    }, "the audit log shows the ban and the mute of the player");
    await screenshot("audit");

    // 6. Signs out.
    await page.click(sel("sign-out"));
    await page.locator(sel("signin")).waitFor({ state: "visible" });
    await screenshot("signed-out");

    // 7. A viewer opens the player and tries to ban: the refusal is shown.
    await signIn(viewer);
    if (await page.locator(sel("nav-operators")).isVisible()) throw new Error("a viewer sees the operators view");
    await openPlayer(player);
    await page.click(sel("action-ban"));
    await page.fill(sel("action-reason"), "A viewer trying to ban (console test)");
    await page.click(sel("action-submit"));
    await expectText(page.locator(sel("action-error")), "Your role does not allow this");
    if (!(await page.locator(sel("action-error")).isVisible())) throw new Error("the refusal is not visible");
    await screenshot("viewer-refused");

    // 8. A player whose names are HTML: shown as text, no script runs.
    if (xssPlayer) {
      await openPlayer(xssPlayer);
      if (xssDisplay) {
        await poll(async () => {
          const names = await page.locator(sel("session-display-name")).allTextContents();
          if (names.includes(xssDisplay)) return true;
          await page.reload();
          await expectText(page.locator(sel("player-name")), xssPlayer);
          return names;
        }, `the session display name ${xssDisplay} shown as text`);
      }
      await page.waitForTimeout(500);
      const injected = await page.evaluate(() => document.querySelectorAll("main img, main svg, main script, main iframe").length);
      if (injected) throw new Error(`${injected} element(s) injected by a player's name`);
      await screenshot("hostile-name");
    }

    checkProblems();
    emit({ step: "done" });
  } catch (error) {
    if (page) await screenshot("failure").catch(() => {});
    throw error;
  } finally {
    await browser.close().catch(() => {});
  }
}

// --- helpers --------------------------------------------------------------------

/** Waits until `locator`'s text is exactly `text` (trimmed). */
async function expectText(locator, text) {
  await poll(async () => {
    const el = locator.first();
    if ((await el.count()) === 0) return "(absent)";
    const now = ((await el.textContent()) || "").trim();
    return now === text || now;
  }, `text ${JSON.stringify(text)}`);
}

/** Polls `check` until it returns true; on timeout, fails with what it returned last. */
async function poll(check, what, limitMs = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + limitMs;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last === true) return;
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(last)}`);
}

/** The player's page lists a session on `node` (the directory is written just after login: reload until then). */
async function waitForSession(page, player, node) {
  await poll(async () => {
    const nodes = await page.locator(sel("session-node")).allTextContents();
    if (nodes.includes(node)) return true;
    await page.reload();
    await expectText(page.locator(sel("player-name")), player);
    return nodes;
  }, `a session of ${player} on ${node}`);
}

/** Opens the form of `action`, fills the reason (and duration), submits, waits for the outcome. */
async function act(page, action, reason, duration) {
  await page.click(sel(`action-${action}`));
  await page.locator(sel(`action-form-${action}`)).waitFor({ state: "visible" });
  if (duration !== undefined) await page.selectOption(sel("action-duration"), duration);
  await page.fill(sel("action-reason"), reason);
  await page.click(sel("action-submit"));
  await poll(async () => {
    const error = page.locator(sel("action-error"));
    if ((await error.count()) && (await error.isVisible())) throw new Error(`${action} refused: ${await error.textContent()}`);
    return (await page.locator(sel(`action-form-${action}`)).count()) === 0 || "form still open";
  }, `the ${action} to be done`);
}

/** The audit table's rows as [action, target, reason, outcome]. */
async function auditRows(page) {
  return page.$$eval('[data-test="audit"] [data-test="audit-entry"]', (rows) =>
    rows.map((row) =>
      ["audit-action", "audit-target", "audit-reason", "audit-outcome"].map((t) => {
        const cell = row.querySelector(`[data-test="${t}"]`);
        return cell ? cell.textContent : null;
      }),
    ),
  );
}

main().then(
  () => {
    input.close();
    process.exit(0);
  },
  (error) => {
    log(`FAILED: ${error.stack || error}`);
    emit({ step: "failed", error: String(error.message || error) });
    input.close();
    process.exit(1);
  },
);
