// The box's API (/api/v1): JSON in and out, the session cookie, and the CSRF header.
// What the annotator needs to keep their place while the box cannot be reached (who
// they are, the labels, the open frame and the few fetched ahead) is kept on the tablet
// in Cache Storage and answered from there when the network fails; nothing else is.

export interface User { id: number; name: string; role: 'admin' | 'annotator' | 'reviewer' | 'steward'; disabled: boolean; created_at: number }
export interface Frame { id: number; camera: string; captured_at: number; width: number; height: number; status: string; accepted_version: number | null; provenance: Record<string, unknown> }
export interface Review { frame: number; version: number; decision: 'accept' | 'reject'; comment: string; reviewer: string; created_at: number }
export interface FrameDetail extends Frame { version: number; last_review: Review | null }
export interface Attribute { name: string; kind: 'text' | 'number' | 'checkbox' | 'select'; choices: string[]; default: string }
export interface Label {
  name: string; color: string; shape: 'any' | 'box' | 'polygon'; attributes: Attribute[];
  /** For annotators: shown beside the label, with the example. */
  instructions?: string;
  /** A box on a frame of this box (x, y, w, h in its pixels); served cropped. */
  example?: { frame: number; box: [number, number, number, number] } | null;
}
export interface Detection { id: number; source: string; label: string; box: [number, number, number, number]; score: number; model?: string; model_sha256?: string }
export interface Shape {
  type: 'box' | 'polygon'; label: string; points: number[]; attributes: Record<string, unknown>;
  /** Set when the shape began as a pre-label: kept by the box, ignored by exports. */
  source?: 'prelabel'; score?: number; model?: string;
}
export interface Annotations { version: number; shapes: Shape[]; author: string | null; saved_at: number | null; dismissed: number[] }
export interface Queue { id: number; name: string; filter: { camera?: string; from?: number; until?: number }; counts: Record<string, number> }

/** The box answered with an error (`{code, message, details}`). */
export class ApiError extends Error {
  constructor(public status: number, public code: string, message: string, public details?: any) { super(message); }
}
/** The box could not be reached: Wi-Fi down, box restarting. */
export class Offline extends Error {}

/** The tablet's copy: anonymized frames only (as the box serves them), a few at a time,
 * dropped at logout. */
const KEPT = 'obscura-kept';
const KEEP = /^\/(auth\/me|labels|frames\/(\d+)(\/(detections|annotations|image))?)$/;
const store = () => ('caches' in window ? caches.open(KEPT) : Promise.reject(new Error('no Cache Storage')));

let offline = false;
let probe = 0;
const offlineListeners = new Set<(offline: boolean) => void>();
/** Called when the box stops or starts answering. */
export const onOffline = (f: (offline: boolean) => void) => { offlineListeners.add(f); };
function setOffline(v: boolean): void {
  if (v === offline) return;
  offline = v;
  clearInterval(probe);
  // While it is away, ask every 3 s whether it is back.
  if (v) probe = window.setInterval(() => fetch('/healthz').then((r) => r.ok && setOffline(false), () => {}), 3000);
  for (const f of offlineListeners) f(v);
}

/** Keeps only these frames' data on the tablet (the open one and those fetched ahead). */
export async function keepOnly(frames: number[]): Promise<void> {
  const cache = await store().catch(() => null);
  for (const key of (await cache?.keys()) ?? []) {
    const id = KEEP.exec(new URL(key.url).pathname.slice('/api/v1'.length))?.[2];
    if (id && !frames.includes(Number(id))) await cache!.delete(key);
  }
}

/** Rewrites a kept JSON answer (a frame's annotations once a save landed). */
export async function rekeep(path: string, change: (old: any) => unknown): Promise<void> {
  const cache = await store().catch(() => null);
  const old = await cache?.match('/api/v1' + path);
  if (!cache || !old) return;
  await cache.put('/api/v1' + path, new Response(JSON.stringify(change(await old.json())), { headers: { 'Content-Type': 'application/json' } }));
}

/** Drops everything kept: at logout, or when the session has ended. */
export const forgetKept = () => { if ('caches' in window) caches.delete(KEPT).catch(() => {}); };

let csrf = '';
export const setCsrf = (token: string) => { csrf = token; };
let onUnauthenticated: () => void = () => {};
export const whenUnauthenticated = (f: () => void) => { onUnauthenticated = f; };

export async function request(method: string, path: string, body?: unknown, timeoutMs = 20000): Promise<Response> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (csrf) headers['X-CSRF-Token'] = csrf;
  const raw = body instanceof Blob;
  if (body !== undefined) headers['Content-Type'] = raw ? 'application/octet-stream' : 'application/json';
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  let response: Response;
  try {
    response = await fetch('/api/v1' + path, {
      method, headers, credentials: 'same-origin', signal: abort.signal,
      body: body === undefined ? undefined : raw ? body : JSON.stringify(body),
    });
  } catch {
    clearTimeout(timer);
    setOffline(true);
    const kept = method === 'GET' && KEEP.test(path) ? await store().then((c) => c.match('/api/v1' + path), () => undefined) : undefined;
    if (kept) return kept;
    throw new Offline('the box cannot be reached');
  }
  clearTimeout(timer);
  setOffline(false);
  if (response.ok && method === 'GET' && KEEP.test(path)) {
    const copy = response.clone();
    store().then((c) => c.put('/api/v1' + path, copy)).catch(() => {});
  }
  if (!response.ok) {
    let e: any = {};
    try { e = await response.json(); } catch { /* not the error shape */ }
    if (response.status === 401 && !path.startsWith('/auth/login')) onUnauthenticated();
    throw new ApiError(response.status, e.code ?? 'http_' + response.status, e.message ?? response.statusText, e.details);
  }
  return response;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await request(method, path, body);
  if (r.status === 204) return undefined as T;
  return (await r.json()) as T;
}

export const get = <T>(path: string) => api<T>('GET', path);

export function query(params: Record<string, string | number | boolean | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? '?' + s : '';
}

/** Saves a zip answer as a download, telling `onBytes` as it arrives. Up to an hour:
 * big exports are packed on the box first, and `tracked` shows that they move. */
export async function download(method: string, path: string, body?: unknown, onBytes?: (got: number, total: number) => void): Promise<void> {
  const r = await request(method, path, body, 3600000);
  const name = /filename="([^"]+)"/.exec(r.headers.get('content-disposition') ?? '')?.[1] ?? 'obscura.zip';
  const total = Number(r.headers.get('content-length') ?? 0);
  const parts: BlobPart[] = [];
  const reader = r.body!.getReader();
  for (let got = 0; ;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    onBytes?.(got += value.length, total);
  }
  const url = URL.createObjectURL(new Blob(parts, { type: 'application/zip' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

/** Label examples as object URLs, fetched once a page load: the panel redraws often,
 * and the box serves them `no-store` like every picture of a frame. */
const examples = new Map<string, Promise<string | null>>();
export function exampleUrl(name: string, frame: number, box: number[]): Promise<string | null> {
  const key = `${name}|${frame}|${box.join()}`;
  let url = examples.get(key);
  if (!url) {
    url = fetch(`/api/v1/labels/${encodeURIComponent(name)}/example`).then((r) => r.ok ? r.blob().then((b) => URL.createObjectURL(b)) : null, () => null);
    examples.set(key, url);
  }
  return url;
}

/** How far long work on the box is (`/progress/{token}`). */
export interface Step { what: string; done: number; total: number; finished: boolean }

/** Runs `work` with a fresh progress token, telling `onStep` how far the box is with it
 * every 400 ms until the work answers. */
export async function tracked<T>(work: (token: string) => Promise<T>, onStep: (s: Step) => void): Promise<T> {
  const token = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('');
  let running = true;
  void (async () => {
    while (running) {
      await new Promise((r) => setTimeout(r, 400));
      const r = await fetch(`/api/v1/progress/${token}`).catch(() => null);
      const s: Step | null = r?.ok ? await r.json() : null;
      if (running && s && !s.finished) onStep(s);
    }
  })();
  try { return await work(token); } finally { running = false; }
}
