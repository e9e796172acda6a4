// The UI benchmark for BENCHMARKS.md (run by scripts/bench-ui): against a real daemon
// storing 1920×1080 frames, in headless Chromium on a 1440×900 desktop viewport, over
// loopback:
//   1. the first load's transfer: every byte the browser received for the app shell
//      (login screen, cold cache), as served (gzip), headers included;
//   2. the time until the canvas is interactive on a 1920×1080 frame, from navigation
//      start, cold page loads (median of RUNS);
//   3. the frame-to-frame time: tap "next", until the next frame is drawn and
//      interactive (median of NAV navigations);
//   4. the first live frame: a new page opens /live, until the camera's picture shows
//      (median of RUNS, 3 s apart, so no live frame is fresh and each is a first viewer).
// Usage: node e2e/bench.mjs CLIP_1080P
import { ApiClient, PASSWORD, VIEWPORTS, launch, startBox, waitFor } from './harness.mjs';

const clip = process.argv[2];
if (!clip) throw new Error('usage: node e2e/bench.mjs CLIP_1080P');
const RUNS = Number(process.env.RUNS ?? 7);
const NAV = Number(process.env.NAV ?? 20);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const box = await startBox({ clip, camera: 'hd', interval: '500ms' });
const chrome = await launch();
try {
  const admin = new ApiClient(box.url);
  await admin.call('POST', '/setup', { code: box.code, name: 'ada', password: PASSWORD });
  await admin.login('ada');
  const frames = await waitFor(`${NAV + 2} stored 1920×1080 frames`, async () => {
    const page = await admin.get('/frames?camera=hd&limit=100');
    return page.items.length >= NAV + 2 && page.items;
  }, { timeout: 300000, every: 2000 });
  if (frames[0].width !== 1920 || frames[0].height !== 1080) throw new Error(`frames are ${frames[0].width}×${frames[0].height}`);

  // 1. First load, cold: what crossed the wire.
  const cold = await chrome.browser.newContext({ ...VIEWPORTS.desktop, baseURL: box.url, serviceWorkers: 'block' });
  const page = await cold.newPage();
  const cdp = await cold.newCDPSession(page);
  await cdp.send('Network.enable');
  const wire = new Map();
  cdp.on('Network.responseReceived', (e) => wire.set(e.requestId, { url: e.response.url, encoding: e.response.headers['content-encoding'] ?? '' }));
  cdp.on('Network.loadingFinished', (e) => { const r = wire.get(e.requestId); if (r) r.bytes = e.encodedDataLength; });
  await page.goto('/login', { waitUntil: 'networkidle' });
  const shell = [...wire.values()].filter((r) => !r.url.includes('/api/'));
  const shellBytes = shell.reduce((n, r) => n + (r.bytes ?? 0), 0);
  const apiBytes = [...wire.values()].filter((r) => r.url.includes('/api/')).reduce((n, r) => n + (r.bytes ?? 0), 0);

  // Log in through the form, as a person would.
  await page.fill('#name', 'ada');
  await page.fill('#password', PASSWORD);
  await page.click('button[type=submit]');
  await page.waitForURL('**/queue');
  await cdp.detach();

  // 2. Time to an interactive canvas on a 1920×1080 frame, cold page loads.
  const tti = [];
  for (let i = 0; i < RUNS; i++) {
    const id = frames[i].id;
    await page.goto(`/frames/${id}`);
    await page.waitForSelector(`.stage[data-frame="${id}"][data-ready]`);
    tti.push(await page.evaluate(() => performance.getEntriesByName('obscura:canvas-ready').at(-1).startTime));
  }

  // 3. Frame to frame with "next", as an annotator moves through the queue.
  const ids = frames.map((f) => f.id);
  await page.evaluate((ids) => sessionStorage.setItem('obscura.nav', JSON.stringify({ ids, from: '/queue' })), ids);
  await page.goto(`/frames/${ids[0]}`);
  await page.waitForSelector(`.stage[data-frame="${ids[0]}"][data-ready]`);
  const nav = [];
  for (let i = 1; i <= NAV; i++) {
    const t0 = await page.evaluate(() => performance.now());
    await page.click('button[aria-label="Next frame"]');
    await page.waitForSelector(`.stage[data-frame="${ids[i]}"][data-ready]`);
    nav.push(await page.evaluate((t0) => performance.getEntriesByName('obscura:canvas-ready').at(-1).startTime - t0, t0));
    await page.waitForTimeout(300); // a person looks before moving on: prefetch has its chance
  }
  // 4. The first live frame, as a newcomer opening the live view meets it.
  const live = [];
  for (let i = 0; i < RUNS; i++) {
    await page.waitForTimeout(3000);
    const p = await page.context().newPage();
    await p.goto('/live');
    const shown = await p.waitForFunction(() => document.querySelector('img[data-camera="hd"]')?.naturalWidth > 0 && performance.now(), null, { timeout: 30000 });
    live.push(await shown.jsonValue());
    await p.close();
  }
  const jpeg = (await admin.call('GET', `/frames/${ids[0]}/image`, undefined, { raw: true }).then((r) => r.arrayBuffer())).byteLength;

  const result = {
    first_load: { shell_bytes_on_wire: shellBytes, api_bytes_on_wire: apiBytes, files: shell.map((r) => `${new URL(r.url).pathname} ${r.bytes} B ${r.encoding}`) },
    canvas_interactive_1080p_ms: { median: Math.round(median(tti)), runs: tti.map(Math.round) },
    frame_to_frame_ms: { median: Math.round(median(nav)), max: Math.round(Math.max(...nav)), runs: nav.map(Math.round) },
    frame_jpeg_bytes: jpeg,
    first_live_frame_ms: { median: Math.round(median(live)), runs: live.map(Math.round) },
  };
  console.log(JSON.stringify(result, null, 2));
  await cold.close();
} finally {
  await chrome.close();
  await box.stop();
}
