// The tablet app end to end (issue #7), in real headless Chromium against a real daemon,
// once on a touch tablet viewport and once on a desktop one. Each viewport gets a box of
// its own, so each starts at first-run setup. What the app claims to have saved is
// checked through the API, from a session of the test's own.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ApiClient, PASSWORD, VIEWPORTS, imagePoint, launch, pinch, screenshot, startBox, touchDrag, waitFor } from './harness.mjs';

const LABELS = [
  { name: 'person', color: '#ff7a00', shape: 'any', attributes: [{ name: 'occluded', kind: 'checkbox', choices: [], default: 'false' }] },
  { name: 'bag', color: '#00c2ff', shape: 'box', attributes: [] },
  { name: 'vehicle', color: '#7cff00', shape: 'any', attributes: [{ name: 'kind', kind: 'select', choices: ['car', 'van', 'bike'], default: 'car' }] },
];

for (const [kind, device] of Object.entries(VIEWPORTS)) {
  const touch = device.hasTouch;
  const shot = (page, name) => (kind === 'tablet' || name.startsWith('annotate') ? screenshot(page, kind === 'tablet' ? name : `${name}-desktop`) : null);

  describe(`the app on a ${kind} (${device.viewport.width}×${device.viewport.height}${touch ? ', touch' : ''})`, () => {
    let box, chrome, context, page, admin;
    let frames = [];
    const puts = [];
    const errors = [];

    before(async () => {
      box = await startBox();
      chrome = await launch();
      context = await chrome.browser.newContext({ ...device, baseURL: box.url, acceptDownloads: true });
      // Which kind of pointer the app's handlers see: the touch path must be the real one.
      await context.addInitScript(() => {
        window.__pointerTypes = [];
        document.addEventListener('pointerdown', (e) => window.__pointerTypes.push(e.pointerType), true);
      });
      page = await context.newPage();
      page.on('pageerror', (e) => errors.push(e));
      page.on('response', async (r) => {
        if (r.request().method() === 'PUT' && /\/annotations$/.test(r.url())) puts.push({ status: r.status(), body: r.request().postDataJSON() });
      });
    });

    after(async () => {
      await chrome?.close();
      await box?.stop();
    });

    const tap = (selector) => (touch ? page.tap(selector) : page.click(selector));
    const saved = () => page.waitForSelector('.save-state[data-state="saved"]', { timeout: 20000 });
    const ready = (id) => page.waitForSelector(`.stage[data-frame="${id}"][data-ready]`, { timeout: 30000 });
    /** A box given in fractions of the frame's width and height. */
    const drawPart = (f, x1, y1, x2, y2) => drawBox(...[x1 * f.width, y1 * f.height, x2 * f.width, y2 * f.height].map(Math.round));
    async function drawBox(x1, y1, x2, y2) {
      const a = await imagePoint(page, x1, y1);
      const b = await imagePoint(page, x2, y2);
      if (touch) {
        await touchDrag(page, a, b);
      } else {
        await page.mouse.move(a.x, a.y);
        await page.mouse.down();
        await page.mouse.move((a.x + b.x) / 2, (a.y + b.y) / 2, { steps: 4 });
        await page.mouse.move(b.x, b.y, { steps: 4 });
        await page.mouse.up();
      }
    }

    test('1. first-run setup: the setup code, then the first admin', async () => {
      await page.goto('/');
      await page.waitForURL('**/setup');
      await page.fill('#code', box.code.toLowerCase()); // typed on a tablet: case does not matter
      await page.fill('#name', 'ada');
      await page.fill('#password', PASSWORD);
      await page.fill('#again', PASSWORD);
      await tap('button[type=submit]');
      // The first admin starts at the box's starter labels (issue 18).
      await page.waitForURL(/\/labels\?welcome$/);
      admin = new ApiClient(box.url);
      const me = await admin.login('ada');
      assert.equal(me.user.role, 'admin');
      assert.equal((await admin.get('/setup')).pending, false);
      await admin.call('PUT', '/labels', LABELS);
    });

    test('2. log out and log in', async () => {
      await tap('header button:has-text("Log out")');
      await page.waitForURL('**/login');
      await page.fill('#name', 'ada');
      await page.fill('#password', 'not the password');
      await tap('button[type=submit]');
      await page.waitForSelector('.error:has-text("wrong name or password")');
      await shot(page, 'login');
      await page.fill('#password', PASSWORD);
      await tap('button[type=submit]');
      await page.waitForURL('**/queue');
    });

    test('3. the queue: progress counts, filters, and frames with pre-labels', async () => {
      frames = await waitFor('pre-labelled frames (NanoDet runs when anonymization is idle)', async () => {
        const page_ = await admin.get('/frames?prelabeled=true&limit=20');
        return page_.items.length >= 4 && page_.items;
      }, { timeout: 240000, every: 2000 });
      await page.reload();
      await page.waitForSelector('.card[data-queue="1"]');
      const text = await page.textContent('.card[data-queue="1"]');
      assert.match(text, /\d+ new/);
      assert.match(text, /Label next frame/);
      await page.check('#f-pre');
      await page.waitForSelector(`.thumb[data-frame="${frames[0].id}"]`);
      await page.selectOption('#f-camera', 'sample');
      await page.waitForSelector(`.thumb[data-frame="${frames[0].id}"]`);
      await page.waitForFunction(() => [...document.querySelectorAll('.thumb img')].slice(0, 4).every((i) => i.complete && i.naturalWidth > 0));
      await shot(page, 'queue');
    });

    let frame, prelabels, drawnBox;
    test('4–6. draw a box by touch, pick a label, accept a pre-label', async () => {
      frame = frames[0];
      prelabels = (await admin.get(`/frames/${frame.id}/detections`)).prelabels;
      assert.ok(prelabels.length > 0);
      await tap(`.thumb[data-frame="${frame.id}"]`);
      await page.waitForURL(`**/frames/${frame.id}`);
      await ready(frame.id);
      await page.waitForSelector('.prelist li[data-pre]');
      await shot(page, 'annotate');
      if (touch) {
        // Pinch to zoom in and back out: the view changes, the shapes do not.
        const before_ = await page.evaluate(() => window.__obscuraView.scale());
        const c = await page.locator('canvas').boundingBox();
        await pinch(page, { x: c.x + c.width / 2, y: c.y + c.height / 2 }, 40, 120);
        const zoomed = await page.evaluate(() => window.__obscuraView.scale());
        assert.ok(zoomed > before_ * 1.5, `pinch zoomed ${before_} → ${zoomed}`);
        await page.keyboard.press('0');
      }
      // A box in the frame's top-left corner, clear of most people.
      drawnBox = [20, 20, Math.round(frame.width * 0.3), Math.round(frame.height * 0.25)];
      await drawBox(...drawnBox);
      await page.waitForSelector('h2:has-text("Selected: box")');
      if (touch) assert.ok((await page.evaluate(() => window.__pointerTypes)).includes('touch'), 'the canvas saw touch pointers');
      await tap('.labels button[data-label="bag"]');
      await page.waitForSelector('.labels button[data-label="bag"][aria-pressed="true"]');
      await tap('.prelist li[data-pre="0"] button[aria-label^="Accept"]');
      await page.waitForSelector('h2:has-text("Shapes (2)")');
      await saved();
    });

    test('7. reload: the box and the accepted pre-label persisted (checked through the API)', async () => {
      await page.reload();
      await ready(frame.id);
      await page.waitForSelector('h2:has-text("Shapes (2)")');
      const ann = await admin.get(`/frames/${frame.id}/annotations`);
      assert.equal(ann.author, 'ada');
      const drawn = ann.shapes.find((s) => s.label === 'bag');
      assert.ok(drawn, JSON.stringify(ann.shapes));
      drawn.points.forEach((v, i) => assert.ok(Math.abs(v - drawnBox[i]) <= 3, `drawn ${drawn.points} vs ${drawnBox}`));
      const accepted = ann.shapes.find((s) => s.source === 'prelabel');
      assert.ok(accepted, JSON.stringify(ann.shapes));
      accepted.points.forEach((v, i) => assert.ok(Math.abs(v - prelabels[0].box[i]) <= 0.5));
      assert.equal(accepted.score, Math.round(prelabels[0].score * 1000) / 1000);
      assert.equal((await admin.get(`/frames/${frame.id}`)).status, 'in_progress', 'a save is a draft');
    });

    test('7b. submit: the draft goes up for review', async () => {
      await page.waitForSelector('button:has-text("Submit for review")');
      await tap('button:has-text("Submit for review")');
      await waitFor('the frame submitted', async () => (await admin.get(`/frames/${frame.id}`)).status === 'annotated');
    });

    test('8. review: accept the frame', async () => {
      await tap('header nav a:has-text("Review")');
      await page.waitForSelector(`.thumb[data-frame="${frame.id}"]`);
      await tap(`.thumb[data-frame="${frame.id}"]`);
      await ready(frame.id);
      await page.waitForSelector('button:has-text("Accept frame")');
      await shot(page, 'review');
      await tap('button:has-text("Accept frame")');
      await waitFor('the frame accepted', async () => (await admin.get(`/frames/${frame.id}`)).status === 'accepted');
      const [review] = await admin.get(`/frames/${frame.id}/reviews`);
      assert.equal(review.decision, 'accept');
      assert.equal(review.reviewer, 'ada');
    });

    test('review: a rejection with a comment returns the frame, and says why', async () => {
      const other = frames[1];
      await admin.call('PUT', `/frames/${other.id}/annotations`, { base: 0, shapes: [{ type: 'box', label: 'person', points: [10, 10, 50, 90], attributes: {} }] });
      await admin.call('POST', `/frames/${other.id}/submit`, { version: 1 });
      await page.goto(`/frames/${other.id}`);
      await ready(other.id);
      await tap('button:has-text("Reject")');
      await page.fill('dialog textarea', 'box the bag on the desk too');
      await tap('dialog button[value="reject"]');
      await waitFor('the frame rejected', async () => (await admin.get(`/frames/${other.id}`)).status === 'rejected');
      await page.goto(`/frames/${other.id}`);
      await ready(other.id);
      const banner = await page.textContent('.banner[role=alert]');
      assert.match(banner, /Returned by ada: box the bag on the desk too/);
    });

    test('a rejected pre-label stays rejected, on the box and after a reload', async () => {
      const f = frames[3];
      const [first] = (await admin.get(`/frames/${f.id}/detections`)).prelabels;
      await page.goto(`/frames/${f.id}`);
      await ready(f.id);
      await tap('.prelist li[data-pre="0"] button[aria-label^="Reject"]');
      await saved();
      await waitFor('the rejection saved', async () => (await admin.get(`/frames/${f.id}/annotations`)).dismissed.includes(first.id));
      await page.reload();
      await ready(f.id);
      assert.equal(await page.locator('.prelist li[data-pre="0"]').count(), 0, 'not offered again');
    });

    test('offline: two edits while the network is down arrive in order when it returns', async () => {
      const f = frames[2];
      await page.goto(`/frames/${f.id}`);
      await ready(f.id);
      const v0 = (await admin.get(`/frames/${f.id}/annotations`)).version;
      await saved();
      puts.length = 0;
      await context.setOffline(true);
      await drawPart(f, 0.05, 0.05, 0.3, 0.3);
      await drawPart(f, 0.4, 0.05, 0.6, 0.3);
      await page.waitForSelector('.save-state[data-state="offline"][data-pending="2"]');
      assert.equal((await admin.get(`/frames/${f.id}/annotations`)).version, v0, 'nothing reached the box while offline');
      await context.setOffline(false);
      await saved();
      const ann = await admin.get(`/frames/${f.id}/annotations`);
      assert.equal(ann.version, v0 + 2, 'both edits saved, one version each');
      assert.equal(ann.shapes.length, 2);
      const landed = puts.filter((p) => p.status === 200).map((p) => p.body);
      assert.deepEqual(landed.map((b) => [b.base, b.shapes.length]), [[v0, 1], [v0 + 1, 2]], 'in order, each on the last');
    });

    test('conflict: another session saved first, and the app says so instead of overwriting', async () => {
      const f = frames[2];
      const theirs = await admin.get(`/frames/${f.id}/annotations`);
      const other = new ApiClient(box.url);
      await other.login('ada');
      const { version } = await other.call('PUT', `/frames/${f.id}/annotations`, { base: theirs.version, shapes: [theirs.shapes[0]] });
      await drawPart(f, 0.7, 0.05, 0.95, 0.3);
      await page.waitForSelector('dialog:has-text("Someone else saved this frame first")');
      await page.waitForSelector('.save-state[data-state="conflict"]');
      const now = await admin.get(`/frames/${f.id}/annotations`);
      assert.equal(now.version, version, 'not overwritten');
      assert.equal(now.shapes.length, 1);
      if (kind === 'tablet') await screenshot(page, 'conflict');
      await tap('dialog button[value="mine"]');
      await saved();
      const mine = await admin.get(`/frames/${f.id}/annotations`);
      assert.equal(mine.version, version + 1, 'kept mine as a new version on top of theirs');
      assert.equal(mine.shapes.length, 3);
    });

    test('keyboard: undo and redo (desktop) or buttons (tablet)', async () => {
      const f = frames[2];
      const v = (await admin.get(`/frames/${f.id}/annotations`)).version;
      if (touch) await tap('button[aria-label="Undo"]');
      else { await page.locator('canvas').focus(); await page.keyboard.press('Control+z'); }
      await page.waitForSelector('h2:has-text("Shapes (2)")');
      if (touch) await tap('button[aria-label="Redo"]');
      else await page.keyboard.press('Control+Shift+z');
      await page.waitForSelector('h2:has-text("Shapes (3)")');
      await saved();
      assert.equal((await admin.get(`/frames/${f.id}/annotations`)).version, v + 2);
      if (!touch) {
        await page.keyboard.press('?');
        await page.waitForSelector('dialog:has-text("Shortcuts")');
        await page.keyboard.press('Escape');
        await page.keyboard.press(']');
        await page.waitForURL((u) => !u.pathname.endsWith(`/frames/${f.id}`));
      }
    });

    test('live view: frames from the anonymizer, over MJPEG', async () => {
      await page.goto('/live');
      await page.waitForSelector('img[data-camera="sample"]');
      const width = await waitFor('a live frame', () => page.evaluate(() => document.querySelector('img[data-camera="sample"]').naturalWidth), { timeout: 30000 });
      // The daemon's stream: anonymized frames at most 640 px wide, at the camera's aspect.
      assert.equal(width, Math.min(640, frames[0].width));
      const height = await page.evaluate(() => document.querySelector('img[data-camera="sample"]').naturalHeight);
      assert.equal(height, Math.round((width * frames[0].height) / frames[0].width));
      const type = await page.evaluate(async () => {
        const abort = new AbortController();
        const r = await fetch('/api/v1/cameras/sample/live', { signal: abort.signal });
        abort.abort();
        return r.headers.get('content-type');
      });
      assert.match(type, /^multipart\/x-mixed-replace/);
      await shot(page, 'live');
    });

    test('device dashboard: cameras, system, storage and sync', async () => {
      await tap('header nav a:has-text("Device")');
      await page.waitForSelector('.card[data-camera="sample"] .badge.up', { timeout: 20000 });
      const text = await page.textContent('main');
      for (const what of ['CPU', 'Temperature', 'Disk', 'Frames', 'Last retention', 'fps', 'Dropped']) assert.ok(text.includes(what), what);
      // The sync card: this box is not enrolled with a hub, and says how to enrol.
      const sync = await page.textContent('.card[data-card="sync"]');
      assert.match(sync, /not enrolled \(obscura sync enrol\)/);
      assert.match(sync, /Backlog/);
      await shot(page, 'dashboard');
    });

    test('labels: the admin edits the schema', async () => {
      await tap('header nav a:has-text("Labels")');
      await page.waitForSelector('.card[data-label="vehicle"]');
      await shot(page, 'labels');
      await tap('button:has-text("+ Label")');
      await page.locator('.card input[aria-label="Label name"]').last().fill('tripod');
      await tap('button:has-text("Save schema")');
      await waitFor('the new label', async () => (await admin.get('/labels')).some((l) => l.name === 'tripod'));
      const vehicle = (await admin.get('/labels')).find((l) => l.name === 'vehicle');
      assert.deepEqual(vehicle.attributes[0].choices, ['car', 'van', 'bike']);
    });

    test('users: the admin adds a steward', async () => {
      await tap('header nav a:has-text("Users")');
      await page.waitForSelector('tr[data-user="ada"]');
      await page.fill('#u-name', 'sam');
      await page.selectOption('#u-role', 'steward');
      await page.fill('#u-password', PASSWORD);
      await tap('button:has-text("Add user")');
      await page.waitForSelector('tr[data-user="sam"]');
      assert.equal((await admin.get('/users')).find((u) => u.name === 'sam').role, 'steward');
      await shot(page, 'users');
    });

    test('consent: a steward records, withdraws, erases and exports, each confirmed', async () => {
      const steward = await chrome.browser.newContext({ ...device, baseURL: box.url, acceptDownloads: true });
      const p = await steward.newPage();
      const tapS = (s) => (touch ? p.tap(s) : p.click(s));
      await p.goto('/login');
      await p.fill('#name', 'sam');
      await p.fill('#password', PASSWORD);
      await tapS('button[type=submit]');
      await p.waitForURL('**/consents');
      await p.waitForSelector('.card:has-text("camera:sample")');
      await p.fill('#c-scope', 'zone:lobby');
      await p.fill('#c-covered', 'visitors, under signage at the door');
      await p.fill('#c-basis', 'legitimate interest');
      await tapS('button:has-text("Record consent")');
      const card = p.locator('.card:has-text("zone:lobby")');
      await card.waitFor();
      await card.locator('button:has-text("Withdraw")').click();
      await p.waitForSelector('dialog:has-text("Withdraw this consent?")');
      await tapS('dialog button[value="yes"]');
      await p.waitForSelector('.card:has-text("zone:lobby") .badge.withdrawn');
      const sam = new ApiClient(box.url);
      await sam.login('sam');
      const lobby = (await sam.get('/consents')).find((c) => c.scope.kind === 'zone' && c.scope.name === 'lobby');
      assert.ok(lobby?.withdrawn_at, JSON.stringify(lobby));
      // A dataset download: the zip `obscura export` writes, audited with its format.
      await p.selectOption('#x-format', 'cvat');
      await p.selectOption('#x-purpose', 'annotate');
      const [dataset] = await Promise.all([p.waitForEvent('download'), tapS('#x-download')]);
      assert.equal(dataset.suggestedFilename(), 'obscura-cvat-annotate.zip');
      const exports = (await sam.get('/audit?action=export&limit=500')).items;
      assert.ok(exports.some((e) => e.detail.format === 'cvat' && e.detail.frames > 0), JSON.stringify(exports));
      // A subject access request and an erasure over a window with nothing in it.
      await p.fill('#e-camera', 'sample');
      await p.fill('#e-from', '2020-01-01T00:00');
      await p.fill('#e-until', '2020-01-02T00:00');
      await tapS('button:has-text("Access export")');
      await p.waitForSelector('dialog:has-text("Export for an access request?")');
      const [download] = await Promise.all([p.waitForEvent('download'), tapS('dialog button[value="yes"]')]);
      assert.match(download.suggestedFilename(), /^access-sample-.*\.zip$/);
      await p.fill('#e-reason', 'DSR-2026-014');
      await tapS('button:has-text("Erase…")');
      await p.waitForSelector('dialog:has-text("Erase these frames for good?")');
      await tapS('dialog button[value="yes"]');
      await p.waitForSelector('.toast:has-text("Erased 0 frame(s)")');
      const audit = await admin.get('/audit?limit=500');
      assert.ok(audit.items.some((e) => e.action.startsWith('erase')), audit.items.map((e) => e.action).join(' '));
      await p.locator('.toast').evaluate((t) => t.remove());
      if (kind === 'tablet') await screenshot(p, 'consent');
      await steward.close();
    });

    test("arm's length: every control is a 44 px target, and nothing scrolls sideways", async () => {
      const screens = ['/queue', `/frames/${frames[0].id}`, '/review', '/labels', '/consents', '/device', '/users', '/live'];
      const sizes = touch ? [[device.viewport.width, device.viewport.height], [device.viewport.height, device.viewport.width]] : [[device.viewport.width, device.viewport.height]];
      for (const [width, height] of sizes) {
        await page.setViewportSize({ width, height });
        for (const path of screens) {
          await page.goto(path);
          await page.waitForSelector('main h1, main h2, [data-ready="true"]');
          await page.waitForTimeout(300);
          const small = await page.evaluate(() => {
            const out = [];
            for (const el of document.querySelectorAll('button, a[href], input, select, textarea, [role=button]')) {
              if (el.type === 'hidden' || el.closest('[hidden], dialog:not([open])')) continue;
              const target = (el.type === 'checkbox' || el.type === 'radio') && el.closest('label') ? el.closest('label') : el;
              const r = target.getBoundingClientRect();
              if (r.width === 0 && r.height === 0) continue;
              if (r.height < 43.5 || r.width < 43.5) out.push(`${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''} "${(el.textContent || el.getAttribute('aria-label') || '').trim().slice(0, 20)}" ${Math.round(r.width)}×${Math.round(r.height)}`);
            }
            return out;
          });
          assert.deepEqual(small, [], `${path} at ${width}×${height}`);
          const sideways = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
          assert.ok(sideways <= 1, `${path} at ${width}×${height} scrolls sideways by ${sideways} px`);
        }
      }
      await page.setViewportSize(device.viewport);
    });

    test('no script errors on any screen', () => {
      assert.deepEqual(errors.map(String), []);
    });
  });
}
