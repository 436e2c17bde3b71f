// The console's journey in headless Chromium (playwright-core, Debian's chromium): each role
// signs in at the real identity provider (oidc-provider.mjs), finds a partner, and — as an
// operator — suspends it with a reason, sees the audit entry, and logs out; at desktop width
// and at 375 px, with a screenshot of each step in OUT_DIR. Run by
// crates/keyward/tests/api/console.rs, which starts keyward and the provider:
//
//   CONSOLE_URL=http://127.0.0.1:PORT PARTNER_CODE=CODE OUT_DIR=target/e2e node console-journey.mjs
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const consoleUrl = process.env.CONSOLE_URL;
const code = process.env.PARTNER_CODE;
const outDir = process.env.OUT_DIR;
fs.mkdirSync(outDir, { recursive: true });

// playwright's launch starts Chromium on a fresh temporary profile of its own.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});

const widths = { desktop: { width: 1280, height: 800 }, mobile: { width: 375, height: 740 } };

async function shot(page, name) {
  await page.screenshot({ path: path.join(outDir, `console-${name}.png`), fullPage: true });
}

/** Signs in as `email` from a fresh browser context; returns the page on the partners list. */
async function signIn(viewport, email) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  await page.goto(`${consoleUrl}/console/partners`);
  // The provider's login form, then its consent form.
  await page.fill('input[name="login"]', email);
  await page.fill('input[name="password"]', "any");
  await page.click('button[type="submit"]');
  if (await page.locator('input[name="prompt"][value="consent"]').count()) {
    await page.click('button[type="submit"]');
  }
  // The callback's page continues by itself, same-site, carrying the SameSite=Strict cookie.
  await page.waitForURL(`${consoleUrl}/console/partners`);
  await page.locator("#who").waitFor();
  return { context, page };
}

async function openPartner(page, query) {
  await page.fill("#q", query);
  await page.click('form.search button[type="submit"]');
  await page.click(`a[href="/console/partners/${code}"]`);
  await page.locator("#status").waitFor();
}

for (const [size, viewport] of Object.entries(widths)) {
  // A viewer finds the partner (by a fragment of its code) and is offered no action.
  {
    const { context, page } = await signIn(viewport, "viewer@example.com");
    assert.match(await page.textContent("#who"), /viewer@example\.com · viewer/);
    await openPartner(page, code.toLowerCase().slice(0, 4));
    assert.equal(await page.locator('form[action$="/suspend"]').count(), 0, "a viewer sees no action");
    await shot(page, `${size}-viewer-partner`);
    await page.click('button:has-text("Log out")');
    await page.getByText("Your session has ended").waitFor();
    await context.close();
  }
  // An operator suspends (desktop) or reactivates (375 px) it with a reason, and sees the audit.
  {
    const { context, page } = await signIn(viewport, "ops@example.com");
    await shot(page, `${size}-operator-partners`);
    await openPartner(page, code);
    await shot(page, `${size}-operator-partner`);
    if (size === "desktop") {
      await page.fill("#suspend-reason", "e2e: suspected fraud");
      await page.click('form[action$="/suspend"] button[type="submit"]');
      await page.getByText("Suspended: its requests are refused").waitFor();
      assert.equal(await page.textContent("#status"), "suspended");
    } else {
      await page.fill("#activate-reason", "e2e: cleared");
      await page.click('form[action$="/activate"] button[type="submit"]');
      await page.getByText("Active again").waitFor();
      assert.equal(await page.textContent("#status"), "active");
    }
    await shot(page, `${size}-operator-acted`);
    await page.click('a:has-text("whole audit log")');
    const event = size === "desktop" ? "partner_suspended" : "partner_activated";
    await page.locator("#audit").getByText(event).first().waitFor();
    assert.match(await page.textContent("#audit"), /operator:ops@example\.com/);
    await shot(page, `${size}-operator-audit`);
    await page.click('button:has-text("Log out")');
    await page.getByText("Your session has ended").waitFor();
    await shot(page, `${size}-operator-signed-out`);
    // The session cookie is gone (and the session with it, on the server: console.rs checks).
    const cookies = await context.cookies(consoleUrl);
    assert.ok(!cookies.some((c) => c.name === "keyward_console"), JSON.stringify(cookies));
    await context.close();
  }
  // An admin sees the service tokens and webhooks, with their forms.
  {
    const { context, page } = await signIn(viewport, "admin@example.com");
    await page.click('nav a:has-text("Service tokens")');
    await page.locator("#token-name").waitFor();
    await shot(page, `${size}-admin-service-tokens`);
    await page.click('nav a:has-text("Webhooks")');
    await page.locator("#hook-url").waitFor();
    await page.click('button:has-text("Log out")');
    await context.close();
  }
}
await browser.close();
console.log(`console journey done; screenshots in ${outDir}`);
