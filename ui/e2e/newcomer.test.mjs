// Issue 18: the app as a newcomer meets it, on two touch tablets (820×1180 portrait and
// 1024×768 landscape), touch only. One box for both: the portrait tablet does first-run
// setup, the landscape one logs in. Each scenario runs on both; what the app claims is
// checked through the API from a session of the test's own.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ApiClient, PASSWORD, VIEWPORTS, launch, pinch, screenshot, startBox, waitFor } from './harness.mjs';

const TABLETS = {
  portrait: { ...VIEWPORTS.tablet },
  landscape: { ...VIEWPORTS.tablet, viewport: { width: 1024, height: 768 } },
};
const STARTER = ['person', 'vehicle', 'bicycle', 'bag', 'car', 'motorcycle', 'bus', 'truck'];

let box, chrome, admin, frames;
const contexts = [];

before(async () => {
  box = await startBox();
  chrome = await launch();
});
after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await chrome?.close();
  await box?.stop();
});

/** A tablet of its own (touch, no mouse), logged in as `name`, or at first-run setup. */
async function tablet(device, name) {
  const context = await chrome.browser.newContext({ ...device, baseURL: box.url, acceptDownloads: true });
  contexts.push(context);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  if (name) {
    await page.goto('/login');
    await page.fill('#name', name);
    await page.fill('#password', PASSWORD);
    await page.tap('button[type=submit]');
    await page.waitForURL((u) => !u.pathname.endsWith('/login'));
  }
  return { page, errors };
}

/** Frames with pre-labels (NanoDet runs while anonymization is idle), once for both. */
async function prelabeled() {
  frames ??= await waitFor('pre-labelled frames', async () => {
    const page = await admin.get('/frames?prelabeled=true&limit=40');
    return page.items.length >= 10 && page.items;
  }, { timeout: 300000, every: 2000 });
  return frames;
}

for (const [kind, device] of Object.entries(TABLETS)) {
  const { width, height } = device.viewport;
  describe(`a newcomer on a ${kind} tablet (${width}×${height}, touch)`, () => {
    let page, errors;
    const tap = (selector) => page.tap(selector);

    test('first run: the admin lands on the starter labels, each its own colour', async () => {
      if (kind === 'portrait') {
        ({ page, errors } = await tablet(device));
        await page.goto('/');
        await page.waitForURL('**/setup');
        await page.fill('#code', box.code);
        await page.fill('#name', 'ada');
        await page.fill('#password', PASSWORD);
        await page.fill('#again', PASSWORD);
        await tap('button[type=submit]');
        await page.waitForURL(/\/labels\?welcome$/);
        await page.waitForSelector('#welcome:has-text("Welcome: first, the labels")');
        admin = new ApiClient(box.url);
        await admin.login('ada');
      } else {
        ({ page, errors } = await tablet(device, 'ada'));
        await tap('header nav a:has-text("Labels")');
      }
      for (const name of STARTER) await page.waitForSelector(`.card[data-label="${name}"]`);
      const labels = await admin.get('/labels');
      if (kind === 'portrait') assert.deepEqual(labels.map((l) => l.name), STARTER);
      else for (const name of STARTER) assert.ok(labels.some((l) => l.name === name), name);
      assert.equal(new Set(labels.map((l) => l.color)).size, labels.length, 'each label its own colour');
    });

    test('labels: a new label gets a colour no other has; removing one asks first', async () => {
      const name = `tripod-${kind}`;
      await tap('button:has-text("+ Label")');
      await page.locator('.card input[aria-label="Label name"]').last().fill(name);
      // Removing asks; Cancel keeps the label.
      await tap('.card[data-label="bag"] button[aria-label="Remove bag"]');
      await page.waitForSelector('dialog:has-text("Remove the label “bag”?")');
      await tap('dialog button:has-text("Cancel")');
      assert.equal(await page.locator('.card[data-label="bag"]').count(), 1, 'cancel keeps it');
      await tap('.card[data-label="bag"] button[aria-label="Remove bag"]');
      await tap('dialog button[value="yes"]');
      await page.waitForSelector('.card[data-label="bag"]', { state: 'detached' });
      await tap('button:has-text("Save schema")');
      const labels = await waitFor('the schema saved', async () => {
        const ls = await admin.get('/labels');
        return ls.some((l) => l.name === name) && ls;
      });
      assert.ok(!labels.some((l) => l.name === 'bag'), 'bag removed');
      assert.equal(new Set(labels.map((l) => l.color)).size, labels.length, `distinct colours: ${labels.map((l) => l.color)}`);
      // Put bag back for the other tablet.
      if (kind === 'portrait') await admin.call('PUT', '/labels', [...labels, { name: 'bag', color: '#777777', shape: 'any', attributes: [] }]);
    });

    test('users: changing a role asks first, granting admin above all', async () => {
      const name = `rita-${kind}`;
      const { id } = await admin.call('POST', '/users', { name, role: 'annotator', password: PASSWORD });
      await tap('header nav a:has-text("Users")');
      const role = `select[aria-label="Role of ${name}"]`;
      await page.waitForSelector(role);
      await page.selectOption(role, 'admin');
      await page.waitForSelector(`dialog:has-text("Make ${name} an admin?")`);
      assert.match(await page.textContent('dialog'), /make other admins/);
      await tap('dialog button:has-text("Cancel")');
      assert.equal(await page.inputValue(role), 'annotator', 'the select shows the role kept');
      assert.equal((await admin.get('/users')).find((u) => u.id === id).role, 'annotator', 'nothing changed');
      await page.selectOption(role, 'reviewer');
      await page.waitForSelector(`dialog:has-text("Make ${name} a reviewer?")`);
      await tap('dialog button[value="yes"]');
      await waitFor('the role changed', async () => (await admin.get('/users')).find((u) => u.id === id).role === 'reviewer');
    });

    test('dashboard: sampling is not a drop, and uptime reads in human units', async () => {
      await tap('header nav a:has-text("Device")');
      const card = '.card[data-camera="sample"]';
      await page.waitForSelector(`${card} dt:has-text("Skipped by sampling")`, { timeout: 20000 });
      const text = await waitFor('frames skipped by the 1 s interval', async () => {
        const t = await page.textContent(card);
        return /Skipped by sampling\d+ inside the interval/.test(t) && t;
      }, { timeout: 30000 });
      const dropped = await page.textContent(`${card} dt:has-text("Dropped") + dd`);
      assert.doesNotMatch(dropped, /interval/, `sampling is not listed as a drop: ${text}`);
      const uptime = await page.textContent('dt:has-text("Uptime") + dd');
      assert.match(uptime, /^\d+ (s|min)$|^\d+ h( \d+ min)?$/, uptime);
    });

    test('consent: admins are told only a steward acts; an export with nothing consented says why', async () => {
      await tap('header nav a:has-text("Consent")');
      await page.waitForSelector('#steward-only:has-text("Only a steward records or withdraws consent")');
      assert.equal(await page.locator('button:has-text("Withdraw")').count(), 0);
      await page.selectOption('#x-purpose', 'train');
      let downloaded = false;
      page.once('download', () => { downloaded = true; });
      await tap('#x-download');
      await page.waitForSelector('#x-error:has-text("no frame here is consented for `train`")');
      assert.match(await page.textContent('#x-error'), /obscura consent add --purpose train/);
      assert.equal(downloaded, false, 'no empty zip');
      assert.equal(await page.locator('.toast:has-text("Dataset downloaded")').count(), 0);
    });

    test('consent: the steward’s form has a valid-from and says what a consent covers', async () => {
      const steward = `sam-${kind}`;
      await admin.call('POST', '/users', { name: steward, role: 'steward', password: PASSWORD });
      const s = await tablet(device, steward);
      await s.page.waitForSelector('#c-from');
      assert.match(await s.page.textContent('#c-covers'), /covers the frames captured from its start/);
      await s.page.fill('#c-scope', `zone:${kind}`);
      await s.page.fill('#c-covered', 'visitors');
      await s.page.fill('#c-basis', 'legitimate interest');
      await s.page.fill('#c-from', '2030-01-02T03:04');
      await s.page.tap('button:has-text("Record consent")');
      const mine = await waitFor('the consent recorded', async () =>
        (await admin.get('/consents')).find((c) => c.scope.kind === 'zone' && c.scope.name === kind));
      assert.equal(mine.valid_from, new Date('2030-01-02T03:04').getTime());
      assert.deepEqual(s.errors.map(String), []);
    });

    test('annotating: "Accept all" makes the frame a draft at once; rejected pre-labels are counted', async () => {
      const fs = await prelabeled();
      const [x, y] = kind === 'portrait' ? fs.slice(0, 2) : fs.slice(2, 4);
      const open = async (f) => {
        await page.goto(`/frames/${f.id}`);
        await page.waitForSelector(`.stage[data-frame="${f.id}"][data-ready]`, { timeout: 30000 });
        await page.waitForSelector('.framebar .badge.new');
        assert.match(await page.textContent('#annotated-by'), /Not annotated yet/);
        return (await admin.get(`/frames/${f.id}/detections`)).prelabels;
      };
      const xs = await open(x);
      await tap('.prelist li[data-pre="0"] button[aria-label^="Reject"]');
      await page.waitForSelector(`h2:has-text("Pre-labels (${xs.length - 1} to check, 0 accepted, 1 rejected)")`);
      await page.waitForSelector('.save-state[data-state="saved"]', { timeout: 20000 });
      const ys = await open(y);
      await tap('button:has-text("Accept all")');
      await page.waitForSelector('.framebar .badge.in_progress', { timeout: 1000 });
      await page.waitForSelector(`h2:has-text("Pre-labels (0 to check, ${ys.length} accepted, 0 rejected)")`);
      assert.match(await page.textContent('#annotated-by'), /Annotated by ada/);
      await page.waitForSelector('.save-state[data-state="saved"]', { timeout: 20000 });
      assert.equal((await admin.get(`/frames/${y.id}`)).status, 'in_progress');
    });

    test('labels: instructions and an example from a frame show beside the label', async () => {
      const fs = await prelabeled();
      const f = fs[kind === 'portrait' ? 14 : 15] ?? fs[kind === 'portrait' ? 0 : 1];
      const { version, width: w, height: hh } = await admin.get(`/frames/${f.id}`);
      // A person the pre-labeller found, if any, makes a telling example.
      const found = (await admin.get(`/frames/${f.id}/detections`)).prelabels.find((d) => d.label === 'person');
      const [x1, y1, x2, y2] = found ? found.box.map(Math.round) : [20, 30, 120, 230];
      const points = [Math.max(0, x1), Math.max(0, y1), Math.min(w, x2), Math.min(hh, y2)];
      await admin.call('PUT', `/frames/${f.id}/annotations`, { base: version, shapes: [{ type: 'box', label: 'person', points, attributes: {} }] });
      await page.goto(`/frames/${f.id}`);
      await page.waitForSelector(`.stage[data-frame="${f.id}"][data-ready]`, { timeout: 30000 });
      await tap('button[aria-label="Select person"]');
      // The label's instructions (the starter text on the first tablet) show at once beside it.
      const told = (await admin.get('/labels')).find((l) => l.name === 'person').instructions;
      if (kind === 'portrait') assert.match(told, /^Box every person/);
      await page.waitForSelector(`figure.guide figcaption:has-text("${told.slice(0, 20)}")`);
      await tap('button:has-text("Use as the example for “person”")');
      const person = await waitFor('the example saved', async () => {
        const p = (await admin.get('/labels')).find((l) => l.name === 'person');
        return p.example?.frame === f.id && p;
      });
      assert.deepEqual(person.example.box, [points[0], points[1], points[2] - points[0], points[3] - points[1]]);
      // The example is the crop the box serves, loaded beside the label.
      await waitFor('the example shown', () => page.evaluate(() => {
        const img = document.querySelector('figure.guide img');
        return img && img.complete && img.naturalWidth > 0 && img.naturalWidth;
      }), { timeout: 10000 });
      // The admin rewrites the instructions under Labels; the next frame shows them.
      await page.goto('/labels');
      const text = `Whole body, tight box (${kind}).`;
      await page.fill('.card[data-label="person"] textarea', text);
      await page.waitForSelector('.card[data-label="person"] figure.guide img');
      await tap('button:has-text("Save schema")');
      await waitFor('the instructions saved', async () => (await admin.get('/labels')).find((l) => l.name === 'person').instructions === text);
      await page.goto(`/frames/${f.id}`);
      await page.waitForSelector(`.stage[data-frame="${f.id}"][data-ready]`, { timeout: 30000 });
      await tap('button[aria-label="Select person"]');
      await page.waitForSelector(`figure.guide figcaption:has-text("${text}")`);
      if (kind === 'portrait') {
        await page.locator('figure.guide').scrollIntoViewIfNeeded();
        await screenshot(page, 'label-guide');
      }
      assert.deepEqual(errors.map(String), []);
    });

    test('long work shows progress: a dataset download, and an import with its report', async () => {
      const fs = await prelabeled();
      await page.goto('/consents');
      await page.waitForSelector('#x-download');
      // Every text the progress line shows, however briefly.
      await page.evaluate(() => {
        window.__meter = [];
        new MutationObserver(() => document.querySelectorAll('.meter:not([hidden]) span').forEach((s) => window.__meter.push(s.textContent)))
          .observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
      });
      await page.selectOption('#x-purpose', 'annotate');
      const [download] = await Promise.all([page.waitForEvent('download', { timeout: 120000 }), tap('#x-download')]);
      assert.match(download.suggestedFilename(), /^obscura-coco-annotate\.zip$/);
      await page.waitForSelector('.toast:has-text("Dataset downloaded")');
      const seen = await page.evaluate(() => window.__meter);
      assert.ok(seen.some((t) => /^Downloading [\d.]+ [KM]?B of [\d.]+ [KM]?B$/.test(t)), `the bar said: ${seen.slice(0, 5)}`);
      assert.equal(await page.locator('.meter:not([hidden])').count(), 0, 'the bar goes when the work is done');

      // An import: a COCO file naming one frame by file name, and one no frame has.
      // Not a frame a later test needs new (2 and 3, 4 to 9): the first two were
      // annotated already, and an import adds a version whatever the frame holds.
      const f = fs[kind === 'portrait' ? 16 : 17] ?? fs[kind === 'portrait' ? 0 : 1];
      const coco = {
        categories: [{ id: 1, name: 'person' }],
        // Ids no frame has: a file name that matches no frame falls back to its id.
        images: [{ id: 900001, file_name: `${f.id}.jpg` }, { id: 900002, file_name: 'elsewhere.jpg' }],
        annotations: [{ id: 1, image_id: 900001, category_id: 1, bbox: [5, 6, 70, 80] }],
      };
      await page.setInputFiles('#i-file', { name: `site-${kind}.json`, mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(coco)) });
      await tap("#i-import");
      await page.waitForSelector(`#i-result:has-text("2 image(s) in site-${kind}.json: matched 1 by file name and 0 by id; updated 1 frame(s) with 1 shape(s), 0 unchanged")`);
      assert.match(await page.textContent('#i-result'), /Not matched \(no frame has this file name or id\): elsewhere\.jpg/);
      const ann = await admin.get(`/frames/${f.id}/annotations`);
      assert.deepEqual(ann.shapes.map((s) => [s.label, s.points]), [['person', [5, 6, 75, 86]]]);
      assert.deepEqual(errors.map(String), []);
    });

    test('the canvas: one row of tools, the shape list in view, and a zoom level that pinching changes', async () => {
      const fs = await prelabeled();
      const f = fs[kind === 'portrait' ? 10 : 11] ?? fs[0];
      await page.goto(`/frames/${f.id}`);
      await page.waitForSelector(`.stage[data-frame="${f.id}"][data-ready]`, { timeout: 30000 });
      const rows = await page.evaluate(() => {
        const tops = new Set([...document.querySelectorAll('.stage .tools button')].filter((b) => b.offsetParent).map((b) => Math.round(b.getBoundingClientRect().top)));
        return tops.size;
      });
      assert.equal(rows, 1, 'the toolbar does not wrap');
      if (kind === 'landscape') {
        const bottom = await page.evaluate(() => [...document.querySelectorAll('.side h2')].find((e) => e.textContent.startsWith('Shapes')).getBoundingClientRect().bottom);
        assert.ok(bottom <= height, `the shape list starts in view (its heading ends at ${bottom} of ${height} px)`);
      }
      const zoom = async () => Number(/(\d+) %/.exec(await page.textContent('button.zoom'))[1]);
      const fitted = await zoom();
      assert.equal(fitted, Math.round(await page.evaluate(() => window.__obscuraView.scale()) * 100));
      const c = await page.locator('canvas').boundingBox();
      await pinch(page, { x: c.x + c.width / 2, y: c.y + c.height / 2 }, 40, 120);
      await waitFor('the zoom level to follow the pinch', async () => (await zoom()) > fitted * 1.5, { timeout: 5000 });
      await tap('button.zoom');
      await waitFor('the frame fitted again', async () => (await zoom()) === fitted, { timeout: 5000 });
    });

    test('a frame opened by its URL has a next frame', async () => {
      const fs = await prelabeled();
      const f = fs[kind === 'portrait' ? 12 : 13] ?? fs[1];
      const fresh = await tablet(device, 'ada');
      await fresh.page.goto(`/frames/${f.id}`);
      await fresh.page.waitForSelector(`.stage[data-frame="${f.id}"][data-ready]`, { timeout: 30000 });
      await fresh.page.tap('button[aria-label="Next frame"]');
      await fresh.page.waitForURL((u) => /\/frames\/\d+$/.test(u.pathname) && !u.pathname.endsWith(`/frames/${f.id}`));
      const next = Number(new URL(fresh.page.url()).pathname.split('/').pop());
      assert.ok(next > f.id, `next after ${f.id} is ${next}`);
      assert.deepEqual(fresh.errors.map(String), []);
    });

    test('review: the panel names the annotator; after a reject, next is a frame still waiting for review', async () => {
      const fs = await prelabeled();
      const [a, b, c] = kind === 'portrait' ? fs.slice(4, 7) : fs.slice(7, 10);
      const ana = new ApiClient(box.url);
      if (kind === 'portrait') await admin.call('POST', '/users', { name: 'ana', role: 'annotator', password: PASSWORD });
      await ana.login('ana');
      for (const f of [a, b, c]) {
        await ana.call('PUT', `/frames/${f.id}/annotations`, { base: 0, shapes: [{ type: 'box', label: 'person', points: [10, 10, 50, 90], attributes: {} }] });
        await ana.call('POST', `/frames/${f.id}/submit`, { version: 1 });
      }
      await tap('header nav a:has-text("Review")');
      await page.waitForSelector(`.thumb[data-frame="${c.id}"]`);
      // Someone else accepts b while this reviewer works down the list.
      await admin.call('POST', `/frames/${b.id}/reviews`, { version: 1, decision: 'accept', comment: '' });
      await tap(`.thumb[data-frame="${a.id}"]`);
      await page.waitForSelector(`.stage[data-frame="${a.id}"][data-ready]`, { timeout: 30000 });
      assert.match(await page.textContent('#annotated-by'), /Annotated by ana/);
      await tap('button:has-text("Reject")');
      await page.fill('dialog textarea', 'the cyclist is missing');
      await tap('dialog button[value="reject"]');
      await page.waitForURL((u) => !u.pathname.endsWith(`/frames/${a.id}`));
      const next = Number(new URL(page.url()).pathname.split('/').pop());
      assert.notEqual(next, b.id, 'not the frame someone accepted meanwhile');
      assert.equal((await admin.get(`/frames/${next}`)).status, 'annotated', `frame ${next} waits for review`);
    });

    test('the queue: an annotator is told no consent covers any frame, not "All done"', async () => {
      // Last: the consent is withdrawn, and no frame is visible any more.
      const annotator = `nina-${kind}`;
      await admin.call('POST', '/users', { name: annotator, role: 'annotator', password: PASSWORD });
      if (kind === 'landscape') {
        const sam = new ApiClient(box.url);
        await sam.login('sam-landscape');
        for (const c of await sam.get('/consents')) if (!c.withdrawn_at) await sam.call('POST', `/consents/${c.id}/withdraw`);
      }
      const n = await tablet(device, annotator);
      await n.page.waitForSelector('.card[data-queue="1"]');
      if (kind === 'portrait') {
        assert.equal(await n.page.locator('#no-consent').count(), 0, 'frames are consented');
      } else {
        await n.page.waitForSelector('#no-consent:has-text("No consent covers any frame yet")');
        assert.match(await n.page.textContent('#no-consent'), /A steward records one under Consent/);
        assert.equal(await n.page.locator('.card[data-queue="1"] button:has-text("All done")').count(), 0);
      }
      assert.deepEqual(n.errors.map(String), []);
    });

    test('no script errors', () => {
      assert.deepEqual(errors.map(String), []);
    });
  });
}
