// The annotation canvas: one frame, its anonymized image, the shapes people draw, the
// pre-labeller's proposals and the anonymizer's redactions. Pointer events carry touch,
// mouse and pen alike: one pointer draws, moves or resizes; two pointers pinch to zoom
// and pan. Every finished edit is a snapshot handed to the outbox, which saves it.

import { ApiError, api, exampleUrl, get, keepOnly, request, type Annotations, type Detection, type FrameDetail, type Label, type Shape } from './api';
import { clear, dialog, fmtTime, h, toast } from './dom';
import type { Ctx } from './main';

type Tool = 'box' | 'polygon' | 'pan';
type Pt = { x: number; y: number };
type Drag =
  | { kind: 'draw'; start: Pt; end: Pt }
  | { kind: 'move'; index: number; start: Pt; orig: number[] }
  | { kind: 'handle'; index: number; handle: number; orig: number[] }
  | { kind: 'pan'; start: Pt; view: View }
  | { kind: 'pinch'; d0: number; m0: Pt; view: View };
interface View { s: number; x: number; y: number }
interface Snapshot { shapes: Shape[]; rejected: number[] }

const HANDLE_PX = 22; // hit radius on screen: a 44 px target
const AHEAD = 3; // frames fetched ahead of the open one (and kept on the tablet)
const MIN_DRAG_PX = 8;
const PRE_COLOR = '#ff2bd6';

/** Images of frames the person is likely to open next, fetched ahead as blobs (the box
 * marks frame images `no-store`, so the HTTP cache cannot help). */
const images = new Map<number, Promise<string>>();
function imageUrl(id: number): Promise<string> {
  let p = images.get(id);
  if (!p) {
    p = request('GET', `/frames/${id}/image`).then((r) => r.blob()).then((b) => URL.createObjectURL(b));
    p.catch(() => images.delete(id));
    images.set(id, p);
    while (images.size > 6) {
      const [oldest, url] = images.entries().next().value as [number, Promise<string>];
      images.delete(oldest);
      url.then((u) => URL.revokeObjectURL(u), () => {});
    }
  }
  return p;
}

/** The ids the person moves through with next and previous (set by the queue and
 * review screens). */
export function setNav(ids: number[], from: string): void {
  sessionStorage.setItem('obscura.nav', JSON.stringify({ ids, from }));
}
function nav(): { ids: number[]; from: string } {
  try { return JSON.parse(sessionStorage.getItem('obscura.nav') ?? '') ?? { ids: [], from: '/queue' }; } catch { return { ids: [], from: '/queue' }; }
}

const boxOf = (s: Shape): number[] => {
  if (s.type === 'box') return s.points;
  const xs = s.points.filter((_, i) => i % 2 === 0), ys = s.points.filter((_, i) => i % 2 === 1);
  return [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
};
function iou(a: number[], b: number[]): number {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0])), hh = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = w * hh, area = (r: number[]) => (r[2] - r[0]) * (r[3] - r[1]);
  return inter / (area(a) + area(b) - inter || 1);
}
function inPolygon(p: Pt, pts: number[]): boolean {
  let inside = false;
  for (let i = 0, j = pts.length - 2; i < pts.length; j = i, i += 2) {
    const [xi, yi, xj, yj] = [pts[i], pts[i + 1], pts[j], pts[j + 1]];
    if (yi > p.y !== yj > p.y && p.x < ((xj - xi) * (p.y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}
const round = (v: number) => Math.round(v * 10) / 10;

export function annotateScreen(root: HTMLElement, id: number, ctx: Ctx): () => void {
  const canReview = ctx.user.role === 'admin' || ctx.user.role === 'reviewer';
  let frame: FrameDetail;
  let labels: Label[] = [];
  let shapes: Shape[] = [];
  let pre: Detection[] = [];
  let redactions: Detection[] = [];
  let rejected = new Set<number>();
  let author: string | null = null;
  let savedAt: number | null = null;
  let sel = -1;
  let selPre = -1;
  let tool: Tool = 'box';
  let currentLabel = '';
  let view: View = { s: 1, x: 0, y: 0 };
  let fitted = true;
  const undo: Snapshot[] = [];
  const redo: Snapshot[] = [];
  let poly: number[] | null = null;
  let drag: Drag | null = null;
  let dragBefore: Snapshot | null = null;
  const pointers = new Map<number, Pt>();
  let downAt: Pt | null = null;
  let tapped: { shape?: number; pre?: number } = {};
  let space = false;
  let img: HTMLImageElement | null = null;
  let disposed = false;

  const canvas = h('canvas', { 'aria-label': 'Frame canvas: drag to draw a box, pinch to zoom, two fingers to pan', tabindex: '0', role: 'application' });
  const g = canvas.getContext('2d')!;
  const toolButtons = {
    box: h('button', { 'aria-pressed': 'true', title: 'Draw boxes (B)', onclick: () => setTool('box') }, '▭ Box'),
    polygon: h('button', { 'aria-pressed': 'false', title: 'Draw polygons (P)', onclick: () => setTool('polygon') }, '⬠ Polygon'),
    pan: h('button', { 'aria-pressed': 'false', title: 'Move the view (H)', onclick: () => setTool('pan') }, 'Move view'),
  };
  const undoBtn = h('button', { title: 'Undo (Ctrl+Z)', 'aria-label': 'Undo', onclick: () => doUndo() }, '↶ Undo');
  const redoBtn = h('button', { title: 'Redo (Ctrl+Shift+Z)', 'aria-label': 'Redo', onclick: () => doRedo() }, '↷ Redo');
  // The zoom level (100 % = one frame pixel a screen pixel); a tap fits the frame again.
  const zoomBtn = h('button', { class: 'zoom', title: 'Fit the frame (0)', 'aria-label': 'Zoom: fit the frame', onclick: () => { fit(); draw(); } }, '⤢ Fit');
  const closePolyBtn = h('button', { class: 'primary hidden', onclick: () => closePolygon() }, '✓ Close polygon');
  const loading = h('div', { class: 'loading' }, 'Loading frame…');
  const stage = h('div', { class: 'stage' },
    h('div', { class: 'tools', role: 'toolbar', 'aria-label': 'Drawing tools' }, toolButtons.box, toolButtons.polygon, toolButtons.pan, undoBtn, redoBtn,
      zoomBtn,
      h('button', { title: 'Keyboard shortcuts (?)', 'aria-label': 'Help', onclick: () => help() }, '?'),
      closePolyBtn),
    h('div', { class: 'surface' }, canvas, loading));
  const side = h('aside', { class: 'side', 'aria-label': 'Frame tools' });
  root.append(h('div', { class: 'annotate' }, stage, side));

  // ---- Loading ----

  async function load(): Promise<void> {
    const t0 = performance.now();
    const [detail, dets, ann, schema, url] = await Promise.all([
      get<FrameDetail>(`/frames/${id}`),
      get<{ prelabels: Detection[]; redactions: Detection[] }>(`/frames/${id}/detections`),
      get<Annotations>(`/frames/${id}/annotations`),
      ctx.labels(),
      imageUrl(id),
    ]);
    const image = new Image();
    image.src = url;
    await image.decode();
    if (disposed) return;
    frame = detail;
    labels = schema;
    currentLabel ||= labels[0]?.name ?? 'object';
    pre = dets.prelabels;
    redactions = dets.redactions;
    ctx.outbox.setBase(id, ann.version);
    shapes = ctx.outbox.pending(id) ?? ann.shapes ?? [];
    author = ann.author;
    savedAt = ann.saved_at;
    // Rejections are kept on the box with each version (and queued with unsent edits).
    const dismissed = new Set(ctx.outbox.pendingDismissed(id) ?? ann.dismissed ?? []);
    rejected = new Set(pre.flatMap((d, i) => (dismissed.has(d.id) ? [i] : [])));
    img = image;
    loading.remove();
    resize();
    panel();
    stage.dataset.frame = String(id);
    stage.dataset.ready = 'true';
    ctx.setTitle(`Frame ${id}`);
    // For the benchmark: when the canvas took its first touch-ready frame.
    performance.mark('obscura:canvas-ready', { detail: { frame: id, loadMs: performance.now() - t0 } });
    prefetch();
  }

  function prefetch(): void {
    const { ids } = nav();
    if (!ids.includes(id)) {
      // Opened by its URL (a bookmark, a link): next goes on through the frames after it.
      get<{ items: { id: number }[] }>(`/frames?after=${id}&limit=48`).then((page) => {
        if (disposed || nav().ids.includes(id)) return;
        setNav([id, ...page.items.map((f) => f.id)], '/queue');
        prefetch();
      }, () => {});
      return;
    }
    // The next few and the previous one, whole (what the canvas loads), so they open
    // at once and, kept on the tablet, while the box cannot be reached.
    const i = ids.indexOf(id);
    const around = [...ids.slice(i + 1, i + 1 + AHEAD), ids[i - 1]].filter((n) => n !== undefined);
    for (const n of around) {
      imageUrl(n).catch(() => {});
      for (const part of ['', '/detections', '/annotations']) get(`/frames/${n}${part}`).catch(() => {});
    }
    void keepOnly([id, ...around]);
  }

  // ---- Geometry and view ----

  function fit(): void {
    if (!img) return;
    const w = canvas.clientWidth, hh = canvas.clientHeight;
    const s = Math.min(w / img.naturalWidth, hh / img.naturalHeight) * 0.98;
    view = { s, x: (w - img.naturalWidth * s) / 2, y: (hh - img.naturalHeight * s) / 2 };
    fitted = true;
  }

  function resize(): void {
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(canvas.clientWidth * dpr);
    canvas.height = Math.round(canvas.clientHeight * dpr);
    if (fitted) fit();
    draw();
  }
  // Where an image pixel is on screen: for tests and benchmarks, which touch real pixels.
  (window as any).__obscuraView = {
    toScreen: (x: number, y: number) => {
      const r = canvas.getBoundingClientRect();
      return { x: r.left + view.x + x * view.s, y: r.top + view.y + y * view.s };
    },
    scale: () => view.s,
  };
  const observer = new ResizeObserver(() => resize());
  observer.observe(canvas);

  const local = (e: { clientX: number; clientY: number }): Pt => {
    const r = canvas.getBoundingClientRect();
    return { x: e.clientX - r.left, y: e.clientY - r.top };
  };
  const toImage = (p: Pt): Pt => ({ x: (p.x - view.x) / view.s, y: (p.y - view.y) / view.s });
  const clampX = (x: number) => Math.max(0, Math.min(frame.width, x));
  const clampY = (y: number) => Math.max(0, Math.min(frame.height, y));
  const color = (label: string) => labels.find((l) => l.name === label)?.color ?? '#00c2ff';

  function zoomAt(p: Pt, factor: number): void {
    const s = Math.max(0.05, Math.min(20, view.s * factor));
    const ip = toImage(p);
    view = { s, x: p.x - ip.x * s, y: p.y - ip.y * s };
    fitted = false;
    draw();
  }

  function handles(s: Shape): Pt[] {
    if (s.type === 'box') {
      const [x1, y1, x2, y2] = s.points;
      return [{ x: x1, y: y1 }, { x: x2, y: y1 }, { x: x2, y: y2 }, { x: x1, y: y2 }];
    }
    const out: Pt[] = [];
    for (let i = 0; i < s.points.length; i += 2) out.push({ x: s.points[i], y: s.points[i + 1] });
    return out;
  }

  function hitHandle(p: Pt): number {
    if (sel < 0) return -1;
    const r = HANDLE_PX / view.s;
    const hs = handles(shapes[sel]);
    for (let i = 0; i < hs.length; i++) if (Math.hypot(hs[i].x - p.x, hs[i].y - p.y) <= r) return i;
    return -1;
  }

  /** The smallest shape under the point, so a box inside another can be picked. */
  function hitShape(p: Pt): number {
    const pad = 6 / view.s;
    let best = -1, bestArea = Infinity;
    shapes.forEach((s, i) => {
      const b = boxOf(s);
      const inside = s.type === 'box'
        ? p.x >= b[0] - pad && p.x <= b[2] + pad && p.y >= b[1] - pad && p.y <= b[3] + pad
        : inPolygon(p, s.points);
      const area = (b[2] - b[0]) * (b[3] - b[1]);
      if (inside && area < bestArea) { best = i; bestArea = area; }
    });
    return best;
  }

  const isPending = (i: number) => !rejected.has(i) && !shapes.some((s) => s.source === 'prelabel' && s.label === pre[i].label && iou(boxOf(s), pre[i].box) > 0.9);

  function hitPre(p: Pt): number {
    let best = -1, bestArea = Infinity;
    pre.forEach((d, i) => {
      const [x1, y1, x2, y2] = d.box;
      const area = (x2 - x1) * (y2 - y1);
      if (isPending(i) && p.x >= x1 && p.x <= x2 && p.y >= y1 && p.y <= y2 && area < bestArea) { best = i; bestArea = area; }
    });
    return best;
  }

  // ---- Drawing ----

  let hatch: CanvasPattern | null = null;
  function hatchPattern(): CanvasPattern {
    if (hatch) return hatch;
    const c = document.createElement('canvas');
    c.width = c.height = 16;
    const p = c.getContext('2d')!;
    p.fillStyle = 'rgba(20,20,20,0.55)';
    p.fillRect(0, 0, 16, 16);
    p.strokeStyle = '#ffd23f';
    p.lineWidth = 4;
    p.beginPath();
    p.moveTo(-4, 4); p.lineTo(4, -4);
    p.moveTo(0, 16); p.lineTo(16, 0);
    p.moveTo(12, 20); p.lineTo(20, 12);
    p.stroke();
    hatch = g.createPattern(c, 'repeat')!;
    return hatch;
  }

  function tag(text: string, x: number, y: number, bg: string, fg = '#000'): void {
    g.font = '600 15px system-ui, sans-serif';
    const w = g.measureText(text).width + 10;
    const sx = x * view.s + view.x, sy = Math.max(20, y * view.s + view.y);
    g.save();
    g.setTransform(window.devicePixelRatio || 1, 0, 0, window.devicePixelRatio || 1, 0, 0);
    g.fillStyle = bg;
    g.fillRect(sx, sy - 20, w, 20);
    g.fillStyle = fg;
    g.fillText(text, sx + 5, sy - 5);
    g.restore();
  }

  function path(s: { type: string; points: number[] }): void {
    g.beginPath();
    if (s.type === 'box') {
      const [x1, y1, x2, y2] = s.points;
      g.rect(Math.min(x1, x2), Math.min(y1, y2), Math.abs(x2 - x1), Math.abs(y2 - y1));
    } else {
      g.moveTo(s.points[0], s.points[1]);
      for (let i = 2; i < s.points.length; i += 2) g.lineTo(s.points[i], s.points[i + 1]);
      g.closePath();
    }
  }

  function draw(): void {
    if (!img || disposed) return;
    const zoom = `${Math.round(view.s * 100)} %`;
    if (zoomBtn.dataset.zoom !== zoom) {
      zoomBtn.dataset.zoom = zoom;
      zoomBtn.textContent = `⤢ ${zoom}`;
      zoomBtn.setAttribute('aria-label', `Zoom ${zoom}: fit the frame`);
    }
    const dpr = window.devicePixelRatio || 1;
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.fillStyle = '#1b1f24';
    g.fillRect(0, 0, canvas.width, canvas.height);
    g.setTransform(dpr * view.s, 0, 0, dpr * view.s, dpr * view.x, dpr * view.y);
    g.imageSmoothingEnabled = view.s < 2;
    g.drawImage(img, 0, 0);
    const px = 1 / view.s;
    // Redactions: hatched, labelled, not selectable, and there is no way to hide them.
    for (const r of redactions) {
      const [x1, y1, x2, y2] = r.box;
      g.fillStyle = hatchPattern();
      g.save();
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.fillRect(x1 * view.s + view.x, y1 * view.s + view.y, (x2 - x1) * view.s, (y2 - y1) * view.s);
      g.restore();
      g.strokeStyle = '#ffd23f';
      g.lineWidth = 2 * px;
      g.strokeRect(x1, y1, x2 - x1, y2 - y1);
      tag(`redacted ${r.label.replace('_', ' ')}`, x1, y1, '#ffd23f');
    }
    // Pre-labels still waiting for a decision: dashed magenta, with their score.
    pre.forEach((d, i) => {
      if (!isPending(i)) return;
      const [x1, y1, x2, y2] = d.box;
      g.setLineDash([8 * px, 6 * px]);
      g.strokeStyle = PRE_COLOR;
      g.lineWidth = (i === selPre ? 5 : 3) * px;
      g.strokeRect(x1, y1, x2 - x1, y2 - y1);
      g.setLineDash([]);
      tag(`pre ${d.label} ${d.score.toFixed(2)}`, x1, y1, PRE_COLOR, '#fff');
    });
    shapes.forEach((s, i) => {
      const c = color(s.label);
      path(s);
      g.fillStyle = c + '33';
      g.fill();
      g.strokeStyle = c;
      g.lineWidth = (i === sel ? 4 : 3) * px;
      g.stroke();
      const b = boxOf(s);
      tag(s.label + (s.source === 'prelabel' ? ' ✓' : ''), b[0], b[1], c);
    });
    if (sel >= 0 && shapes[sel]) {
      for (const p of handles(shapes[sel])) {
        g.beginPath();
        g.arc(p.x, p.y, 9 * px, 0, Math.PI * 2);
        g.fillStyle = '#fff';
        g.fill();
        g.lineWidth = 3 * px;
        g.strokeStyle = '#000';
        g.stroke();
      }
    }
    if (drag?.kind === 'draw') {
      g.strokeStyle = color(currentLabel);
      g.lineWidth = 3 * px;
      g.setLineDash([6 * px, 4 * px]);
      g.strokeRect(drag.start.x, drag.start.y, drag.end.x - drag.start.x, drag.end.y - drag.start.y);
      g.setLineDash([]);
    }
    if (poly) {
      g.beginPath();
      g.moveTo(poly[0], poly[1]);
      for (let i = 2; i < poly.length; i += 2) g.lineTo(poly[i], poly[i + 1]);
      g.strokeStyle = color(currentLabel);
      g.lineWidth = 3 * px;
      g.stroke();
      for (let i = 0; i < poly.length; i += 2) {
        g.beginPath();
        g.arc(poly[i], poly[i + 1], (i === 0 ? 10 : 6) * px, 0, Math.PI * 2);
        g.fillStyle = i === 0 ? '#ffd23f' : '#fff';
        g.fill();
      }
    }
  }

  // ---- Edits ----

  const snap = (): Snapshot => ({ shapes: JSON.parse(JSON.stringify(shapes)), rejected: [...rejected] });

  function restore(s: Snapshot): void {
    shapes = s.shapes;
    rejected = new Set(s.rejected);
    sel = Math.min(sel, shapes.length - 1);
    selPre = -1;
  }

  /** One finished edit: undoable, drawn, and saved. */
  function commit(before: Snapshot): void {
    undo.push(before);
    if (undo.length > 200) undo.shift();
    redo.length = 0;
    persist();
  }

  function persist(): void {
    ctx.outbox.save(id, shapes, [...rejected].map((i) => pre[i].id));
    // A save is a draft: a new frame starts, a submitted or accepted one reopens.
    if (frame.status !== 'rejected') frame.status = 'in_progress';
    author = ctx.user.name;
    panel();
    draw();
  }

  function doUndo(): void {
    const s = undo.pop();
    if (!s) return;
    redo.push(snap());
    restore(s);
    persist();
  }
  function doRedo(): void {
    const s = redo.pop();
    if (!s) return;
    undo.push(snap());
    restore(s);
    persist();
  }

  function newShape(type: 'box' | 'polygon', points: number[]): void {
    const before = snap();
    const label = labels.find((l) => l.name === currentLabel);
    const attributes: Record<string, unknown> = {};
    for (const a of label?.attributes ?? []) attributes[a.name] = a.kind === 'checkbox' ? a.default === 'true' : a.kind === 'number' ? Number(a.default || 0) : a.default;
    shapes.push({ type, label: currentLabel, points: points.map(round), attributes });
    sel = shapes.length - 1;
    selPre = -1;
    commit(before);
  }

  function setLabel(name: string): void {
    currentLabel = name;
    if (sel >= 0) {
      const before = snap();
      shapes[sel].label = name;
      const label = labels.find((l) => l.name === name);
      const attrs: Record<string, unknown> = {};
      for (const a of label?.attributes ?? []) attrs[a.name] = shapes[sel].attributes?.[a.name] ?? a.default;
      shapes[sel].attributes = attrs;
      commit(before);
    } else {
      panel();
    }
  }

  function deleteSelected(): void {
    if (sel >= 0) {
      const before = snap();
      shapes.splice(sel, 1);
      sel = -1;
      commit(before);
    } else if (selPre >= 0) {
      rejectPre(selPre);
    }
  }

  /** A pre-label becomes a shape of its own (label kept if the schema has it). */
  function acceptPre(i: number, select = false): void {
    const before = snap();
    const d = pre[i];
    const known = !labels.length || labels.some((l) => l.name === d.label);
    shapes.push({
      type: 'box', label: known ? d.label : currentLabel, points: d.box.map(round), attributes: {},
      source: 'prelabel', score: Math.round(d.score * 1000) / 1000, model: d.model,
    });
    if (!known) rejected.add(i); // its label is not in the schema: it lives on as the new shape
    sel = select ? shapes.length - 1 : -1;
    selPre = -1;
    commit(before);
  }
  function rejectPre(i: number): void {
    const before = snap();
    rejected.add(i);
    selPre = -1;
    commit(before);
  }
  function acceptAll(): void {
    const before = snap();
    const n = shapes.length;
    pre.forEach((d, i) => {
      if (!isPending(i)) return;
      const known = !labels.length || labels.some((l) => l.name === d.label);
      shapes.push({ type: 'box', label: known ? d.label : currentLabel, points: d.box.map(round), attributes: {}, source: 'prelabel', score: Math.round(d.score * 1000) / 1000, model: d.model });
      if (!known) rejected.add(i);
    });
    if (shapes.length === n) return;
    sel = -1;
    selPre = -1;
    commit(before);
  }

  function closePolygon(): void {
    if (poly && poly.length >= 6) newShape('polygon', poly);
    poly = null;
    closePolyBtn.classList.add('hidden');
    draw();
  }

  function setTool(t: Tool): void {
    tool = t;
    if (t !== 'polygon') { poly = null; closePolyBtn.classList.add('hidden'); }
    for (const [k, b] of Object.entries(toolButtons)) b.setAttribute('aria-pressed', String(k === t));
    draw();
  }

  // ---- Pointers: touch, mouse and pen ----

  canvas.addEventListener('pointerdown', (e) => {
    if (!img) return;
    canvas.setPointerCapture(e.pointerId);
    const p = local(e);
    pointers.set(e.pointerId, p);
    if (pointers.size === 2) {
      // A second finger: whatever the first began becomes a pinch.
      if (dragBefore && (drag?.kind === 'move' || drag?.kind === 'handle')) restore(dragBefore);
      dragBefore = null;
      const [a, b] = [...pointers.values()];
      drag = { kind: 'pinch', d0: Math.hypot(a.x - b.x, a.y - b.y) || 1, m0: { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 }, view: { ...view } };
      draw();
      return;
    }
    if (pointers.size > 2) return;
    downAt = p;
    const ip = toImage(p);
    if (tool === 'pan' || space || e.button === 1 || e.button === 2) {
      drag = { kind: 'pan', start: p, view: { ...view } };
      return;
    }
    if (tool === 'polygon') return; // vertices are added on release
    const handle = hitHandle(ip);
    if (handle >= 0) {
      dragBefore = snap();
      drag = { kind: 'handle', index: sel, handle, orig: [...shapes[sel].points] };
      return;
    }
    const hit = hitShape(ip);
    if (hit >= 0 && hit === sel) {
      // Dragging the selected shape moves it; any other drag draws (a tap selects).
      dragBefore = snap();
      drag = { kind: 'move', index: hit, start: ip, orig: [...shapes[hit].points] };
      return;
    }
    tapped = hit >= 0 ? { shape: hit } : { pre: hitPre(ip) };
    drag = { kind: 'draw', start: { x: clampX(ip.x), y: clampY(ip.y) }, end: { x: clampX(ip.x), y: clampY(ip.y) } };
  });

  canvas.addEventListener('pointermove', (e) => {
    if (!pointers.has(e.pointerId)) return;
    const p = local(e);
    pointers.set(e.pointerId, p);
    if (!drag) return;
    const ip = toImage(p);
    switch (drag.kind) {
      case 'pinch': {
        const [a, b] = [...pointers.values()];
        const d = Math.hypot(a.x - b.x, a.y - b.y);
        const m = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
        const s = Math.max(0.05, Math.min(20, drag.view.s * (d / drag.d0)));
        const anchor = { x: (drag.m0.x - drag.view.x) / drag.view.s, y: (drag.m0.y - drag.view.y) / drag.view.s };
        view = { s, x: m.x - anchor.x * s, y: m.y - anchor.y * s };
        fitted = false;
        break;
      }
      case 'pan':
        view = { s: drag.view.s, x: drag.view.x + p.x - drag.start.x, y: drag.view.y + p.y - drag.start.y };
        fitted = false;
        break;
      case 'draw':
        drag.end = { x: clampX(ip.x), y: clampY(ip.y) };
        break;
      case 'move': {
        const s = shapes[drag.index];
        const b = boxOf({ ...s, points: drag.orig });
        const dx = Math.max(-b[0], Math.min(frame.width - b[2], ip.x - drag.start.x));
        const dy = Math.max(-b[1], Math.min(frame.height - b[3], ip.y - drag.start.y));
        s.points = drag.orig.map((v, i) => round(v + (i % 2 ? dy : dx)));
        break;
      }
      case 'handle': {
        const s = shapes[drag.index];
        const [x, y] = [round(clampX(ip.x)), round(clampY(ip.y))];
        if (s.type === 'box') {
          const pts = [...drag.orig];
          const xi = drag.handle === 0 || drag.handle === 3 ? 0 : 2;
          const yi = drag.handle === 0 || drag.handle === 1 ? 1 : 3;
          pts[xi] = x;
          pts[yi] = y;
          s.points = pts;
        } else {
          s.points = [...drag.orig];
          s.points[drag.handle * 2] = x;
          s.points[drag.handle * 2 + 1] = y;
        }
        break;
      }
    }
    draw();
  });

  function pointerEnd(e: PointerEvent): void {
    if (!pointers.has(e.pointerId)) return;
    const p = local(e);
    pointers.delete(e.pointerId);
    const d = drag;
    if (d?.kind === 'pinch') {
      if (pointers.size === 0) drag = null;
      return; // lifting one finger of a pinch does not start a drawing
    }
    drag = null;
    const moved = downAt ? Math.hypot(p.x - downAt.x, p.y - downAt.y) : 0;
    if (e.type === 'pointercancel') {
      if (dragBefore) restore(dragBefore);
      dragBefore = null;
      draw();
      return;
    }
    if (tool === 'polygon' && !d && moved < MIN_DRAG_PX && !space) {
      const ip = toImage(p);
      if (poly && poly.length >= 6 && Math.hypot(ip.x - poly[0], ip.y - poly[1]) <= HANDLE_PX / view.s) {
        closePolygon();
        return;
      }
      poly = [...(poly ?? []), round(clampX(ip.x)), round(clampY(ip.y))];
      closePolyBtn.classList.toggle('hidden', poly.length < 6);
      draw();
      return;
    }
    if (!d) return;
    if (d.kind === 'draw') {
      const [x1, y1, x2, y2] = [Math.min(d.start.x, d.end.x), Math.min(d.start.y, d.end.y), Math.max(d.start.x, d.end.x), Math.max(d.start.y, d.end.y)];
      if (moved >= MIN_DRAG_PX && x2 - x1 >= 2 && y2 - y1 >= 2) newShape('box', [x1, y1, x2, y2]);
      else {
        // A tap: select what is under the finger, or nothing.
        sel = tapped.shape ?? -1;
        selPre = sel < 0 ? (tapped.pre ?? -1) : -1;
        panel();
        draw();
      }
    } else if ((d.kind === 'move' || d.kind === 'handle') && dragBefore) {
      const s = shapes[d.index];
      if (s.type === 'box') {
        const [x1, y1, x2, y2] = s.points;
        s.points = [Math.min(x1, x2), Math.min(y1, y2), Math.max(x1, x2), Math.max(y1, y2)];
      }
      if (JSON.stringify(s.points) !== JSON.stringify(d.orig)) commit(dragBefore);
      dragBefore = null;
      draw();
    }
  }
  canvas.addEventListener('pointerup', pointerEnd);
  canvas.addEventListener('pointercancel', pointerEnd);
  canvas.addEventListener('contextmenu', (e) => e.preventDefault());
  canvas.addEventListener('dblclick', () => { if (tool === 'polygon') closePolygon(); });
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    zoomAt(local(e), Math.exp(-e.deltaY * (e.ctrlKey ? 0.01 : 0.0015)));
  }, { passive: false });

  // ---- Keyboard ----

  function onKey(e: KeyboardEvent): void {
    const t = e.target as HTMLElement;
    if (t.closest('input, textarea, select, dialog')) return;
    const mod = e.ctrlKey || e.metaKey;
    const k = e.key;
    if (k === ' ') { space = true; if (t === canvas || t === document.body) e.preventDefault(); return; }
    if (mod && (k === 'z' || k === 'Z')) { e.preventDefault(); if (e.shiftKey) doRedo(); else doUndo(); return; }
    if (mod && k === 'y') { e.preventDefault(); doRedo(); return; }
    if (mod) return;
    const nudge = e.shiftKey ? 10 : 1;
    const arrows: Record<string, [number, number]> = { ArrowLeft: [-nudge, 0], ArrowRight: [nudge, 0], ArrowUp: [0, -nudge], ArrowDown: [0, nudge] };
    if (arrows[k] && sel >= 0) {
      e.preventDefault();
      const before = snap();
      const [dx, dy] = arrows[k];
      const s = shapes[sel];
      const b = boxOf(s);
      const cx = Math.max(-b[0], Math.min(frame.width - b[2], dx)), cy = Math.max(-b[1], Math.min(frame.height - b[3], dy));
      s.points = s.points.map((v, i) => round(v + (i % 2 ? cy : cx)));
      commit(before);
      return;
    }
    if (/^[1-9]$/.test(k) && labels[Number(k) - 1]) { setLabel(labels[Number(k) - 1].name); return; }
    switch (k) {
      case 'b': setTool('box'); break;
      case 'p': setTool('polygon'); break;
      case 'h': setTool('pan'); break;
      case 'Delete': case 'Backspace': e.preventDefault(); deleteSelected(); break;
      case 'Escape': poly = null; closePolyBtn.classList.add('hidden'); sel = -1; selPre = -1; panel(); draw(); break;
      case 'Enter':
        if (poly) closePolygon();
        else if (selPre >= 0) acceptPre(selPre);
        break;
      case 'a': if (selPre >= 0) acceptPre(selPre); break;
      case 'A': acceptAll(); break;
      case 'r': if (selPre >= 0) rejectPre(selPre); break;
      case 'e': if (selPre >= 0) acceptPre(selPre, true); break;
      case 'Tab':
        if (t === canvas && shapes.length) { e.preventDefault(); sel = (sel + (e.shiftKey ? shapes.length - 1 : 1)) % shapes.length; selPre = -1; panel(); draw(); }
        break;
      case '+': case '=': zoomAt({ x: canvas.clientWidth / 2, y: canvas.clientHeight / 2 }, 1.25); break;
      case '-': zoomAt({ x: canvas.clientWidth / 2, y: canvas.clientHeight / 2 }, 0.8); break;
      case '0': fit(); draw(); break;
      case ']': case 'PageDown': go(1); break;
      case '[': case 'PageUp': go(-1); break;
      case '?': help(); break;
    }
  }
  const onKeyUp = (e: KeyboardEvent) => { if (e.key === ' ') space = false; };
  document.addEventListener('keydown', onKey);
  document.addEventListener('keyup', onKeyUp);

  function help(): void {
    const rows: [string, string][] = [
      ['Drag (one finger or mouse)', 'draw a box; on a shape: move it; on a corner: resize'],
      ['Pinch / two fingers', 'zoom / pan'], ['Wheel, + / −, 0', 'zoom, fit'], ['Space + drag, right drag, H', 'move the view'],
      ['B / P', 'box / polygon tool'], ['Tap points, tap first point, Enter', 'draw and close a polygon'],
      ['1 – 9', 'pick a label (for the selected shape and new ones)'], ['Tab', 'select the next shape'],
      ['Arrows (Shift: ×10)', 'nudge the selected shape'], ['Delete', 'delete the selected shape'],
      ['A / R / E', 'accept / reject / accept and edit the selected pre-label'], ['Shift + A', 'accept all pre-labels'],
      ['Ctrl + Z / Ctrl + Shift + Z', 'undo / redo'], ['] / [', 'next / previous frame'], ['Esc', 'deselect, cancel a polygon'],
    ];
    void dialog('Shortcuts', h('div', { class: 'keys' }, rows.map(([k, v]) => [h('kbd', null, k), h('span', null, v)])), [{ label: 'Close', value: '', class: 'primary' }]);
  }

  // ---- Navigation and review ----

  async function go(step: number): Promise<void> {
    const { ids, from } = nav();
    const i = ids.indexOf(id);
    const next = i >= 0 ? ids[i + step] : undefined;
    if (next === undefined) {
      toast(step > 0 ? 'That was the last frame of the list.' : 'This is the first frame of the list.');
      if (step > 0) ctx.navigate(from);
      return;
    }
    ctx.navigate(`/frames/${next}`);
  }

  /** After a decision, the next frame that still waits for review (the list the
   * reviewer opened may be stale: others decide too), after this one in its order. */
  async function nextForReview(): Promise<void> {
    try {
      const waiting = (await get<{ items: { id: number }[] }>('/frames?status=annotated&limit=500')).items.map((f) => f.id).filter((f) => f !== id);
      const { ids } = nav();
      const after = ids.indexOf(id);
      const next = waiting.find((f) => ids.indexOf(f) > after) ?? waiting[0];
      if (next === undefined) { toast('Nothing else waits for review.'); ctx.navigate('/review'); return; }
      setNav([...new Set([...ids.filter((f) => f === id || waiting.includes(f)), ...waiting])], '/review');
      ctx.navigate(`/frames/${next}`);
    } catch { go(1); }
  }

  async function submit(): Promise<void> {
    if (ctx.outbox.hasPending(id)) { toast('Wait until the edits are saved, then submit.', true); return; }
    try {
      const r = await api<{ status: string }>('POST', `/frames/${id}/submit`, { version: ctx.outbox.base(id) });
      frame.status = r.status;
      toast(`Frame ${id} submitted for review.`);
      panel();
      go(1);
    } catch (e) {
      toast(e instanceof Error ? e.message : String(e), true);
    }
  }

  async function decide(decision: 'accept' | 'reject'): Promise<void> {
    if (ctx.outbox.hasPending(id)) { toast('Wait until the edits are saved, then review.', true); return; }
    let comment = '';
    if (decision === 'reject') {
      const area = h('textarea', { required: true, 'aria-label': 'What to fix', placeholder: 'What should the annotator fix?' });
      const r = await dialog('Reject and return to the queue', [h('label', null, 'What to fix'), area], [
        { label: 'Cancel', value: '' }, { label: 'Reject', value: 'reject', class: 'danger' },
      ]);
      comment = area.value.trim();
      if (r.value !== 'reject') return;
      if (!comment) { toast('A rejection needs a comment: say what to fix.', true); return; }
    }
    try {
      await api('POST', `/frames/${id}/reviews`, { version: ctx.outbox.base(id), decision, comment });
      toast(decision === 'accept' ? `Frame ${id} accepted.` : `Frame ${id} returned to the queue.`);
      frame.status = decision === 'accept' ? 'accepted' : 'rejected';
      panel();
      nextForReview();
    } catch (e) {
      toast(e instanceof Error ? e.message : String(e), true);
    }
  }

  // ---- The side panel ----

  function attributeInputs(s: Shape): HTMLElement[] {
    const label = labels.find((l) => l.name === s.label);
    return (label?.attributes ?? []).map((a) => {
      const value = s.attributes?.[a.name] ?? a.default;
      const change = (v: unknown) => {
        const before = snap();
        s.attributes = { ...s.attributes, [a.name]: v };
        commit(before);
      };
      let input: HTMLElement;
      if (a.kind === 'checkbox') input = h('input', { type: 'checkbox', checked: value === true || value === 'true', onchange: (e: Event) => change((e.target as HTMLInputElement).checked) });
      else if (a.kind === 'select') input = h('select', { onchange: (e: Event) => change((e.target as HTMLSelectElement).value) }, a.choices.map((c) => h('option', { value: c, selected: c === value }, c)));
      else input = h('input', { type: a.kind === 'number' ? 'number' : 'text', value: String(value ?? ''), onchange: (e: Event) => { const v = (e.target as HTMLInputElement).value; change(a.kind === 'number' ? Number(v) : v); } });
      return h('label', { class: a.kind === 'checkbox' ? 'inline' : undefined }, a.name, ' ', input);
    });
  }

  function panel(): void {
    if (!frame) return;
    undoBtn.disabled = !undo.length;
    redoBtn.disabled = !redo.length;
    const pending = pre.map((_, i) => i).filter(isPending);
    const accepted = shapes.filter((s) => s.source === 'prelabel').length;
    // A pre-label accepted under another label is in `rejected` too, and lives on as a shape.
    const kept = new Set(shapes.filter((sh) => sh.source === 'prelabel').map((sh) => sh.points.join()));
    const nRejected = [...rejected].filter((i) => pre[i] && !kept.has(pre[i].box.map(round).join())).length;
    const review = frame.last_review;
    const s = sel >= 0 ? shapes[sel] : null;
    const labelList = labels.length ? labels : [{ name: currentLabel, color: '#00c2ff', shape: 'any', attributes: [] } as Label];
    const active = labelList.find((l) => l.name === (s ? s.label : currentLabel));
    clear(side,
      h('section', { class: 'framebar' },
        h('button', { 'aria-label': 'Previous frame', title: 'Previous frame ([)', onclick: () => go(-1) }, '◀'),
        h('div', { class: 'grow' }, h('strong', null, `Frame ${frame.id}`), ' ', h('span', { class: `badge ${frame.status}` }, frame.status.replace('_', ' ')),
          h('div', { class: 'muted' }, `${frame.camera} · ${fmtTime(frame.captured_at)} · ${frame.width}×${frame.height}`),
          h('div', { class: 'muted', id: 'annotated-by' }, author ? `Annotated by ${author}${savedAt ? `, ${fmtTime(savedAt)}` : ''}` : 'Not annotated yet')),
        h('button', { 'aria-label': 'Next frame', title: 'Next frame (])', onclick: () => go(1) }, '▶')),
      review?.decision === 'reject' && frame.status !== 'accepted'
        ? h('div', { class: 'banner', role: 'alert' }, h('strong', null, `Returned by ${review.reviewer}: `), review.comment, h('div', { class: 'muted' }, fmtTime(review.created_at)))
        : null,
      (frame.status === 'in_progress' || frame.status === 'rejected') && ctx.outbox.base(id) > 0
        ? h('section', { class: 'banner info', 'aria-label': 'Submit' },
          h('p', null, 'Saved as a draft. Submit when the frame is done: a reviewer then accepts or returns it.'),
          frame.accepted_version ? h('p', { class: 'muted' }, `Version ${frame.accepted_version} stays the accepted one until a new version is accepted.`) : null,
          h('div', { class: 'row' }, h('button', { class: 'primary', onclick: () => submit() }, '➜ Submit for review')))
        : null,
      canReview && (frame.status === 'annotated' || frame.status === 'accepted' || frame.status === 'rejected')
        ? h('section', { class: 'banner info', 'aria-label': 'Review' },
          h('h2', null, 'Review'),
          frame.status === 'annotated'
            ? h('div', { class: 'row' },
              h('button', { class: 'ok', onclick: () => decide('accept') }, '✓ Accept frame'),
              h('button', { class: 'danger', onclick: () => decide('reject') }, '✕ Reject…'))
            : h('p', null, frame.status === 'accepted' ? `This frame is accepted (version ${frame.accepted_version}).` : `This frame is ${frame.status}.`))
        : null,
      h('section', { 'aria-label': 'Shapes' }, h('h2', null, `Shapes (${shapes.length})`),
        h('ul', { class: 'prelist' }, shapes.map((sh, i) => h('li', { class: i === sel ? 'sel' : undefined },
          h('span', { class: 'what' }, `${sh.type} ${sh.label}`),
          h('button', { 'aria-label': `Select ${sh.label}`, onclick: () => { sel = i; selPre = -1; panel(); draw(); } }, 'Select'))))),
      h('section', null, h('h2', null, s ? 'Label of the selected shape' : 'Label for new shapes'),
        h('div', { class: 'labels', role: 'group', 'aria-label': 'Labels' }, labelList.map((l, i) => {
          const swatch = h('span', { class: 'swatch' });
          swatch.style.background = l.color;
          const pressed = (s ? s.label : currentLabel) === l.name;
          return h('button', { 'aria-pressed': String(pressed), 'data-label': l.name, onclick: () => setLabel(l.name) }, swatch, l.name, i < 9 ? h('span', { class: 'key' }, String(i + 1)) : null);
        })),
        guide(active)),
      s ? h('section', { 'aria-label': 'Selected shape' },
        h('h2', null, `Selected: ${s.type} “${s.label}”`),
        s.source === 'prelabel' ? h('p', { class: 'muted' }, `From a pre-label (score ${s.score?.toFixed(2)}).`) : null,
        attributeInputs(s),
        h('div', { class: 'row' }, h('button', { class: 'danger', onclick: () => deleteSelected() }, 'Delete shape'),
          ctx.user.role === 'admin' && labels.some((l) => l.name === s.label)
            ? h('button', { onclick: () => void useAsExample(s) }, `Use as the example for “${s.label}”`) : null)) : null,
      h('section', { 'aria-label': 'Pre-labels' },
        h('div', { class: 'row' }, h('h2', { class: 'grow' }, `Pre-labels (${pending.length} to check, ${accepted} accepted, ${nRejected} rejected)`),
          pending.length ? h('button', { class: 'ok', onclick: () => acceptAll() }, '✓ Accept all') : null),
        pending.length
          ? h('ul', { class: 'prelist' }, pending.map((i) => h('li', { class: i === selPre ? 'sel' : undefined, 'data-pre': String(i) },
            h('span', { class: 'what' }, `${pre[i].label} `, h('span', { class: 'muted' }, pre[i].score.toFixed(2))),
            h('button', { class: 'ok', 'aria-label': `Accept ${pre[i].label} ${pre[i].score.toFixed(2)}`, onclick: () => acceptPre(i) }, '✓'),
            h('button', { 'aria-label': `Edit ${pre[i].label}`, onclick: () => acceptPre(i, true) }, '✎'),
            h('button', { class: 'danger', 'aria-label': `Reject ${pre[i].label}`, onclick: () => rejectPre(i) }, '✕'))))
          : h('p', { class: 'muted' }, pre.length ? 'All pre-labels decided.' : 'No pre-labels on this frame.')),
      h('section', null, h('h2', null, 'Anonymized'),
        h('p', { class: 'muted' }, redactions.length
          ? `${redactions.length} region(s) were blurred on the box before storage (hatched). There is nothing to reveal: the original pixels were never stored.`
          : 'No faces or plates were found on this frame.')),
    );
  }

  /** The picked label's instructions and example, beside the picker (issue 18). */
  function guide(l: Label | undefined): HTMLElement | null {
    if (!l || (!l.instructions && !l.example)) return null;
    const img = l.example ? h('img', { alt: `An example of ${l.name}` }) : null;
    if (img && l.example) void exampleUrl(l.name, l.example.frame, l.example.box).then((url) => { if (url) img.src = url; else img.remove(); });
    return h('figure', { class: 'guide', 'aria-label': `How to label ${l.name}` }, img, l.instructions ? h('figcaption', null, l.instructions) : null);
  }

  /** An admin makes the selected shape its label's example: its frame and bounding box. */
  async function useAsExample(shape: Shape): Promise<void> {
    const b = boxOf(shape);
    const [x1, y1] = [Math.max(0, b[0]), Math.max(0, b[1])].map(round);
    const [x2, y2] = [Math.min(frame.width, b[2]), Math.min(frame.height, b[3])].map(round);
    const next = labels.map((l) => l.name === shape.label ? { ...l, example: { frame: id, box: [x1, y1, x2 - x1, y2 - y1] as [number, number, number, number] } } : l);
    try {
      labels = await api<Label[]>('PUT', '/labels', next);
      ctx.labelsSaved(labels);
      toast(`This ${shape.label} is now the example annotators see beside the label.`);
      panel();
    } catch (e) {
      toast(e instanceof ApiError ? e.message : 'The example could not be saved.');
    }
  }

  const unsubscribe = ctx.outbox.subscribe(() => undefined);
  // A save is a draft: a new frame starts, a submitted or accepted one reopens.
  ctx.outbox.onSaved = (f, version) => {
    if (f === id && frame && frame.status !== 'rejected' && frame.status !== 'in_progress') { frame.status = 'in_progress'; panel(); }
    void version;
  };
  ctx.outbox.onConflict = (c) => ctx.showConflict(c, c.frame === id ? reloadFromBox : undefined);

  async function reloadFromBox(): Promise<void> {
    const ann = await get<Annotations>(`/frames/${id}/annotations`);
    shapes = ann.shapes;
    sel = -1;
    undo.length = 0;
    redo.length = 0;
    panel();
    draw();
  }

  load().catch((e) => {
    loading.textContent = e instanceof ApiError ? e.message : 'The frame could not be loaded: ' + (e instanceof Error ? e.message : String(e));
  });

  return () => {
    disposed = true;
    observer.disconnect();
    unsubscribe();
    document.removeEventListener('keydown', onKey);
    document.removeEventListener('keyup', onKeyUp);
  };
}
