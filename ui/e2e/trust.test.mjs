// Issue 18, items 1 and 5: the tablet that trusts the box. A box serving HTTPS with its
// own root; Chromium with an NSS database in a HOME of the test's own, where the box's
// root is a trusted CA (as `certutil` puts it on a desktop), and WITHOUT
// --ignore-certificate-errors, so the service worker really registers over HTTPS. Then
// the annotator's place survives the box going away: the box is killed, the page
// reloaded, the app stays on its frame (and the few fetched ahead), says it is offline,
// queues edits, and when the box is back on the same state and port, the session is
// still valid and the queued edits are saved. And the first load stays small.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PASSWORD, VIEWPORTS, firstLoad, imagePoint, launch, screenshot, startBox, waitFor } from './harness.mjs';

/** A HOME with an NSS database where `root` (PEM) is a trusted CA for servers. */
function homeTrusting(root) {
  const home = mkdtempSync(join(tmpdir(), 'obscura-e2e-home-'));
  const db = join(home, '.pki/nssdb');
  mkdirSync(db, { recursive: true });
  execFileSync('certutil', ['-N', '-d', `sql:${db}`, '--empty-password']);
  execFileSync('certutil', ['-A', '-d', `sql:${db}`, '-t', 'C,,', '-n', 'obscura-e2e', '-i', root]);
  return home;
}

describe('a tablet that trusts the box (issue 18)', () => {
  let box, home, chrome, context, page;
  const errors = [];
  /** JSON from the box through the page, with the page's own session. */
  const api = (path) => page.evaluate(async (path) => {
    const r = await fetch('/api/v1' + path, { headers: { Accept: 'application/json' } });
    return { status: r.status, body: r.ok ? await r.json() : null };
  }, path);

  before(async () => {
    box = await startBox({ tls: true, interval: '500ms' });
    home = homeTrusting(box.root);
    chrome = await launch({ home });
    context = await chrome.browser.newContext({ ...VIEWPORTS.desktop, baseURL: box.url });
    page = await context.newPage();
    page.on('pageerror', (e) => errors.push(e));
  });

  after(async () => {
    await chrome?.close();
    await box?.stop();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  test('the Trust this box page shows the root the box printed, and the service worker registers', async () => {
    await page.goto('/login');
    await page.click('#trust-link');
    await page.waitForURL('**/trust');
    await page.waitForSelector('#trust-state[data-trusted="yes"]');
    assert.equal(await page.textContent('#root-fingerprint'), box.rootFingerprint());
    await screenshot(page, 'trust');
    // The downloads, fetched by the browser that now trusts the box.
    for (const [id, href, type] of [['#get-profile', '/api/v1/trust/obscura.mobileconfig', 'application/x-apple-aspen-config'],
      ['#get-crt', '/api/v1/trust/obscura-root.crt', 'application/x-x509-ca-cert']]) {
      assert.equal(await page.getAttribute(id, 'href'), href);
      const r = await page.evaluate(async (href) => { const r = await fetch(href); return [r.status, r.headers.get('content-type')]; }, href);
      assert.deepEqual(r, [200, type], href);
    }
    const registered = await page.evaluate(async () => {
      const r = await navigator.serviceWorker.ready;
      return { scope: r.scope, active: r.active?.state };
    });
    assert.equal(registered.scope, box.url + '/');
    assert.equal(registered.active, 'activated');
  });

  test('the first load, cold, stays at or under 30 KB on the wire', async () => {
    const { requests, bytes } = await firstLoad(chrome.browser, box.url + '/', '#code');
    console.log(`first load: ${requests} responses, ${(bytes / 1024).toFixed(1)} KB on the wire`);
    assert.ok(bytes > 10 * 1024, `${bytes} B: the shell was measured`);
    assert.ok(bytes <= 30 * 1024, `the first load is ${(bytes / 1024).toFixed(1)} KB`);
  });

  test('with the box killed, a reload keeps the frame, says offline, moves on and queues; back, it saves', async () => {
    // First run in the app itself, as a newcomer does.
    await page.goto('/');
    await page.fill('#code', box.code);
    await page.fill('#name', 'ada');
    await page.fill('#password', PASSWORD);
    await page.fill('#again', PASSWORD);
    await page.click('button[type=submit]');
    await page.waitForURL('**/labels?welcome');
    await waitFor('six stored frames', async () => (await api('/frames?limit=10')).body?.items.length >= 6, { timeout: 120000, every: 1000 });
    await page.goto('/queue');
    await waitFor('the page under the service worker', () => page.evaluate(() => !!navigator.serviceWorker.controller));
    await page.click('a.thumb >> nth=0');
    const { ids } = JSON.parse(await page.evaluate(() => sessionStorage.getItem('obscura.nav')));
    const [first, second] = ids;
    await page.waitForSelector(`.stage[data-frame="${first}"][data-ready]`);
    // The open frame and the next three are kept on the tablet, whole.
    const kept = ids.slice(0, 4).flatMap((id) => ['', '/detections', '/annotations', '/image'].map((p) => `/api/v1/frames/${id}${p}`));
    await waitFor('the frames fetched ahead, kept', async () => {
      const have = await page.evaluate(async () => (await (await caches.open('obscura-kept')).keys()).map((r) => new URL(r.url).pathname));
      return kept.every((k) => have.includes(k));
    });

    await box.kill();
    await page.reload();
    await page.waitForSelector(`.stage[data-frame="${first}"][data-ready]`);
    assert.equal(new URL(page.url()).pathname, `/frames/${first}`, 'still on the frame, not at /login');
    await page.waitForSelector('#offline:not(.hidden)');
    assert.match(await page.textContent('#offline'), /Offline/);
    await screenshot(page, 'offline');

    // Next: a frame fetched ahead, from the tablet's copy.
    await page.keyboard.press(']');
    await page.waitForSelector(`.stage[data-frame="${second}"][data-ready]`);
    assert.equal(new URL(page.url()).pathname, `/frames/${second}`);
    const a = await imagePoint(page, 40, 40);
    const b = await imagePoint(page, 200, 160);
    await page.mouse.move(a.x, a.y);
    await page.mouse.down();
    await page.mouse.move((a.x + b.x) / 2, (a.y + b.y) / 2, { steps: 4 });
    await page.mouse.move(b.x, b.y, { steps: 4 });
    await page.mouse.up();
    await page.waitForSelector('.save-state[data-state="offline"][data-pending="1"]');

    // The box comes back on the same state and port: the app notices, sends the queue,
    // and the session it had is still good.
    await box.restart();
    await page.waitForSelector('#offline.hidden', { state: 'attached', timeout: 30000 });
    await page.waitForSelector('.save-state[data-state="saved"][data-pending="0"]', { timeout: 30000 });
    assert.equal(new URL(page.url()).pathname, `/frames/${second}`, 'where it was');
    const me = await api('/auth/me');
    assert.equal(me.status, 200);
    assert.equal(me.body.user.name, 'ada');
    const saved = await api(`/frames/${second}/annotations`);
    assert.equal(saved.body.shapes.length, 1);
    assert.equal(saved.body.author, 'ada');
    assert.deepEqual(errors, []);
  });
});
