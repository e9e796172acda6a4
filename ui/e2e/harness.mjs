// What the end-to-end tests and the UI benchmark share: a real `obscura run` daemon on
// loopback over the bundled clip (consent recorded first, as an operator would), a real
// headless Chromium (Debian's, driven by playwright-core), and a small API client with
// its own session, to check what the app saved and to play "another person".
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, statSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

export const ROOT = resolve(new URL('../..', import.meta.url).pathname);
export const BIN = process.env.OBSCURA_BIN ?? join(ROOT, 'target/debug/obscura');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** The environment without OBSCURA_* variables: the daemon reads those as config layers. */
function daemonEnv() {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OBSCURA_')));
}
export const PASSWORD = 'a long enough passphrase';
export const SHOTS = join(ROOT, 'docs/screenshots');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what, check, { timeout = 60000, every = 250 } = {}) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on('error', rej);
  });
}

/** A daemon of its own: fresh state directory, one camera on the bundled clip (or
 * `clip`), consent recorded for annotation. Resolves once it is ready, with the setup
 * code it printed. With `tls`, it serves HTTPS with its own certificate (and root) at
 * https://localhost:PORT, which Node does not trust: readiness is checked with curl
 * trusting the box's root. `kill()` stops it dead (SIGKILL) and `restart()` starts it
 * again on the same state and port. */
export async function startBox({ clip = join(ROOT, 'samples/cap12-webcam.webm'), camera = 'sample', interval = '1s', tls = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'obscura-e2e-'));
  const state = join(dir, 'state');
  mkdirSync(state);
  const config = join(dir, 'obscura.toml');
  writeFileSync(config, `[[camera]]\nid = "${camera}"\nuri = "file://${clip}"\nloop = true\nsample = { interval = "${interval}" }\n${tls ? '[http]\ntls = "on"\n' : ''}`);
  execFileSync(BIN, ['consent', 'add', '--state-dir', state, '--scope', `camera:${camera}`, '--covered', 'the people in the sample clip',
    '--basis', 'consent (e2e test)', '--purpose', 'annotate'], { stdio: 'ignore', env: daemonEnv() });
  const port = await freePort();
  const url = tls ? `https://localhost:${port}` : `http://127.0.0.1:${port}`;
  const root = join(state, 'tls/root.pem');
  let child, exited, stderr = '';
  const spawnDaemon = () => {
    child = spawn(BIN, ['run', '--config', config, '--state-dir', state, '--listen', `127.0.0.1:${port}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...daemonEnv(), RUST_LOG: process.env.RUST_LOG ?? 'warn' },
    });
    child.stderr.on('data', (d) => { stderr += d; });
    exited = new Promise((r) => child.on('exit', r));
  };
  const ready = () => waitFor('/readyz', async () => {
    if (child.exitCode !== null) throw new Error(`obscura exited ${child.exitCode}: ${stderr.slice(-2000)}`);
    if (!tls) return (await fetch(url + '/readyz')).ok;
    try {
      execFileSync('curl', ['-sf', '--max-time', '5', '--cacert', root, url + '/readyz'], { stdio: 'ignore' });
      return true;
    } catch { return false; }
  }, { timeout: 60000 });
  spawnDaemon();
  const code = await waitFor('the setup code on the daemon\'s stderr', () => {
    if (child.exitCode !== null) throw new Error(`obscura exited ${child.exitCode}: ${stderr.slice(-2000)}`);
    return /\b([0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4})\b/.exec(stderr)?.[1];
  }, { timeout: 60000 });
  await ready();
  return {
    url, code, camera, dir, state, root,
    log: () => stderr,
    /** The root's fingerprint as the box printed it (`  https://ADDR root SHA-256 FP`). */
    rootFingerprint: () => / root SHA-256 ([0-9A-F:]+)/.exec(stderr)?.[1],
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    async restart() {
      spawnDaemon();
      await ready();
    },
    async stop() {
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(15000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A session of its own against the box's API, from Node. */
export class ApiClient {
  constructor(url) { this.url = url; this.cookie = ''; this.csrf = ''; }
  async call(method, path, body, { raw = false } = {}) {
    const headers = { accept: 'application/json' };
    if (this.cookie) headers.cookie = this.cookie;
    if (this.csrf) headers['x-csrf-token'] = this.csrf;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await fetch(this.url + '/api/v1' + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const setCookie = r.headers.get('set-cookie');
    if (setCookie) this.cookie = setCookie.split(';')[0];
    if (raw) return r;
    const text = await r.text();
    const json = text ? JSON.parse(text) : null;
    if (!r.ok) {
      const e = new Error(`${method} ${path}: ${r.status} ${text}`);
      e.status = r.status;
      e.body = json;
      throw e;
    }
    return json;
  }
  async login(name, password = PASSWORD) {
    const me = await this.call('POST', '/auth/login', { name, password });
    this.csrf = me.csrf;
    return me;
  }
  get(path) { return this.call('GET', path); }
}

export const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];

/** Headless Chromium. Playwright gives it a fresh temporary profile of its own (it
 * refuses a `--user-data-dir` flag on `launch`), removed when it closes. With `home`,
 * Chromium runs with that HOME, so it reads the NSS database there (`.pki/nssdb`), as a
 * desktop's Chromium does for the certificates its user trusts. */
export async function launch({ home } = {}) {
  const env = home ? { ...process.env, HOME: home } : undefined;
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS, env });
  return { browser, close: () => browser.close() };
}

/** The first load's transfer, as bench.mjs measures Obscura's: a cold context (no cache,
 * no service worker), every response's encodedDataLength (as served, headers included)
 * until the network is idle. `ready` (a selector) must show before it counts. */
export async function firstLoad(browser, url, ready) {
  const context = await browser.newContext({ ...VIEWPORTS.desktop, serviceWorkers: 'block' });
  try {
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    const wire = new Map();
    cdp.on('Network.responseReceived', (e) => wire.set(e.requestId, { url: e.response.url }));
    cdp.on('Network.loadingFinished', (e) => { const r = wire.get(e.requestId); if (r) r.bytes = e.encodedDataLength; });
    await page.goto(url, { waitUntil: 'networkidle', timeout: 120000 });
    if (ready) await page.waitForSelector(ready);
    return { requests: wire.size, bytes: [...wire.values()].reduce((n, r) => n + (r.bytes ?? 0), 0) };
  } finally {
    await context.close();
  }
}

/** The two viewports every flow runs on. */
export const VIEWPORTS = {
  tablet: { viewport: { width: 820, height: 1180 }, deviceScaleFactor: 2, hasTouch: true, isMobile: true,
    userAgent: 'Mozilla/5.0 (Linux; Android 14; Tablet) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36' },
  desktop: { viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1, hasTouch: false, isMobile: false },
};

/** A screenshot of the main screens for docs/screenshots/, kept under 300 KB: a photo
 * makes a big PNG, so a too-large one is taken again at a smaller scale. */
export async function screenshot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, scale: 'css', animations: 'disabled', caret: 'hide' });
  for (const width of [1000, 800, 640]) {
    if (statSync(path).size <= 300 * 1024) break;
    const data = readFileSync(path).toString('base64');
    const small = await page.evaluate(async ({ data, width }) => {
      const img = new Image();
      img.src = 'data:image/png;base64,' + data;
      await img.decode();
      const c = document.createElement('canvas');
      c.width = width;
      c.height = Math.round((img.naturalHeight * width) / img.naturalWidth);
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0, c.width, c.height);
      // Fewer colours compress far better; text stays readable.
      const px = g.getImageData(0, 0, c.width, c.height);
      for (let i = 0; i < px.data.length; i += 4) for (let k = 0; k < 3; k++) px.data[i + k] = px.data[i + k] & 0xf0;
      g.putImageData(px, 0, 0);
      return c.toDataURL('image/png').split(',')[1];
    }, { data, width });
    writeFileSync(path, Buffer.from(small, 'base64'));
  }
  return path;
}

/** A drag by touch through Chromium's own touch input (CDP), so the app sees the same
 * pointer events a finger makes: pointerType "touch". */
export async function touchDrag(page, from, to, steps = 8) {
  const cdp = await page.context().newCDPSession(page);
  const point = (p) => [{ x: p.x, y: p.y, id: 1, radiusX: 4, radiusY: 4, force: 1 }];
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: point(from) });
  for (let i = 1; i <= steps; i++) {
    const p = { x: from.x + ((to.x - from.x) * i) / steps, y: from.y + ((to.y - from.y) * i) / steps };
    await cdp.send('Input.dispatchTouchEvent', { type: 'touchMove', touchPoints: point(p) });
    await sleep(16);
  }
  // The finger rests before it lifts, as when drawing: lifting at speed would start a
  // fling, and Chromium then swallows the next tap as "stop the fling".
  await sleep(120);
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchMove', touchPoints: point(to) });
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
  await cdp.detach();
}

/** Two fingers apart (zoom in), through CDP touch input. */
export async function pinch(page, center, from, to, steps = 6) {
  const cdp = await page.context().newCDPSession(page);
  const pts = (d) => [
    { x: center.x - d, y: center.y, id: 1, radiusX: 4, radiusY: 4, force: 1 },
    { x: center.x + d, y: center.y, id: 2, radiusX: 4, radiusY: 4, force: 1 },
  ];
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: pts(from) });
  for (let i = 1; i <= steps; i++) {
    await cdp.send('Input.dispatchTouchEvent', { type: 'touchMove', touchPoints: pts(from + ((to - from) * i) / steps) });
    await sleep(16);
  }
  await sleep(120);
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchMove', touchPoints: pts(to) });
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
  await cdp.detach();
}

/** Screen point of an image pixel on the canvas, from the app's own view transform. */
export async function imagePoint(page, x, y) {
  return page.evaluate(([x, y]) => window.__obscuraView.toScreen(x, y), [x, y]);
}
