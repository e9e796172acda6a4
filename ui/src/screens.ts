// The screens other than the canvas: first-run setup and login, the work queue,
// review, the label schema, consent and erasure, live view, the device, and users.

import { setNav } from './annotate';
import { ApiError, api, download, exampleUrl, get, query, request, tracked, type Attribute, type Frame, type Label, type Queue, type User } from './api';
import { append, clear, confirmAction, dialog, fmtBytes, fmtDuration, fmtTime, h, localMs, toast } from './dom';
import type { Ctx } from './main';

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));
const fail = (e: unknown) => toast(message(e), true);

export function offlineNote(app: HTMLElement): void {
  clear(app, h('main', { class: 'center' }, h('h1', null, 'The box cannot be reached'),
    h('p', null, 'Check the tablet is on the site Wi-Fi. This page retries by itself.')));
  setTimeout(() => location.reload(), 5000);
}

// ---- Login and first-run setup ----

/** The way to the "Trust this box" page, a page of its own (not a screen of the app). */
const trustLink = () => h('p', { class: 'muted' }, h('a', { href: '/trust', target: '_self', id: 'trust-link' }, 'Trust this box'),
  ' once on each tablet: no certificate warnings, and the app works offline.');

type SignedIn = (u: User, csrf: string) => void;

export function login(root: HTMLElement, done: SignedIn): void {
  const name = h('input', { id: 'name', name: 'username', autocomplete: 'username', autocapitalize: 'none', required: true });
  const password = h('input', { id: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'center', onsubmit: async (e: Event) => {
    e.preventDefault();
    error.textContent = '';
    try {
      const me = await api<{ user: User; csrf: string }>('POST', '/auth/login', { name: name.value.trim(), password: password.value });
      done(me.user, me.csrf);
    } catch (err) {
      error.textContent = message(err);
    }
  } },
  h('h1', null, 'Log in to Obscura'),
  h('label', { for: 'name' }, 'Name'), name,
  h('label', { for: 'password' }, 'Password'), password,
  error,
  h('div', { class: 'row' }, h('button', { class: 'primary grow', type: 'submit' }, 'Log in')),
  h('p', { class: 'muted' }, 'Forgot your password? An admin can set a new one under Users.'),
  trustLink());
  root.append(form);
  name.focus();
}

export function setup(root: HTMLElement, done: SignedIn): void {
  const code = h('input', { id: 'code', autocomplete: 'off', autocapitalize: 'characters', placeholder: 'XXXX-XXXX-XXXX-XXXX', required: true });
  const name = h('input', { id: 'name', autocomplete: 'username', autocapitalize: 'none', required: true });
  const password = h('input', { id: 'password', type: 'password', autocomplete: 'new-password', minlength: '12', required: true });
  const again = h('input', { id: 'again', type: 'password', autocomplete: 'new-password', required: true });
  const error = h('p', { class: 'error', role: 'alert' });
  root.append(h('form', { class: 'center', onsubmit: async (e: Event) => {
    e.preventDefault();
    error.textContent = '';
    if (password.value !== again.value) { error.textContent = 'The two passwords differ.'; return; }
    try {
      await api('POST', '/setup', { code: code.value, name: name.value.trim(), password: password.value });
      const me = await api<{ user: User; csrf: string }>('POST', '/auth/login', { name: name.value.trim(), password: password.value });
      done(me.user, me.csrf);
    } catch (err) {
      error.textContent = message(err);
    }
  } },
  h('h1', null, 'Set up this box'),
  h('p', null, 'Enter the setup code the box printed when it first started (or run ', h('code', null, 'obscura user setup-code'), ' on the box), then create the first admin account.'),
  h('label', { for: 'code' }, 'Setup code'), code,
  h('label', { for: 'name' }, 'Admin name'), name,
  h('label', { for: 'password' }, 'Password (12 characters or more; a short sentence works well)'), password,
  h('label', { for: 'again' }, 'Password again'), again,
  error,
  h('div', { class: 'row' }, h('button', { class: 'primary grow', type: 'submit' }, 'Create the admin')),
  trustLink()));
  code.focus();
}

// ---- Work queue ----

const STATUSES = ['new', 'in_progress', 'annotated', 'accepted', 'rejected'];

function progress(counts: Record<string, number>): HTMLElement {
  const total = STATUSES.reduce((n, s) => n + (counts[s] ?? 0), 0) || 1;
  const bar = h('div', { class: 'bar', role: 'img', 'aria-label': STATUSES.map((s) => `${counts[s] ?? 0} ${s}`).join(', ') });
  for (const s of ['accepted', 'annotated', 'in_progress', 'rejected']) {
    const part = h('span', { class: s });
    part.style.width = `${((counts[s] ?? 0) / total) * 100}%`;
    bar.append(part);
  }
  return bar;
}

function frameCard(f: Frame, extra?: HTMLElement | null): HTMLElement {
  return h('a', { class: 'thumb', href: `/frames/${f.id}`, 'data-frame': String(f.id) },
    h('img', { src: `/api/v1/frames/${f.id}/image?size=320`, alt: `Frame ${f.id}`, loading: 'lazy' }),
    h('div', null, h('strong', null, `#${f.id}`), h('span', { class: `badge ${f.status}` }, f.status.replace('_', ' ')),
      h('span', { class: 'muted' }, `${f.camera} · ${new Date(f.captured_at).toLocaleTimeString()}`)),
    extra ?? null);
}

export function queue(root: HTMLElement, ctx: Ctx): void {
  const camera = h('select', { id: 'f-camera', 'aria-label': 'Camera' }, h('option', { value: '' }, 'All cameras'));
  const status = h('select', { id: 'f-status', 'aria-label': 'Status' }, h('option', { value: '' }, 'Any status'), STATUSES.map((s) => h('option', { value: s }, s.replace('_', ' '))));
  const from = h('input', { id: 'f-from', type: 'datetime-local', 'aria-label': 'From' });
  const until = h('input', { id: 'f-until', type: 'datetime-local', 'aria-label': 'Until' });
  const prelabeled = h('input', { id: 'f-pre', type: 'checkbox' });
  const queues = h('div', { class: 'cards' });
  const list = h('div', { class: 'thumbs' });
  const more = h('button', { class: 'hidden' }, 'More frames');
  let after: number | null = null;
  let ids: number[] = [];
  const saved = JSON.parse(sessionStorage.getItem('obscura.filter') ?? '{}');
  status.value = saved.status ?? '';
  from.value = saved.from ?? '';
  until.value = saved.until ?? '';
  prelabeled.checked = saved.prelabeled ?? false;

  async function loadFrames(reset: boolean): Promise<void> {
    sessionStorage.setItem('obscura.filter', JSON.stringify({ camera: camera.value, status: status.value, from: from.value, until: until.value, prelabeled: prelabeled.checked }));
    if (reset) { after = null; ids = []; clear(list); }
    try {
      const page = await get<{ items: Frame[]; next_after: number | null }>('/frames' + query({
        camera: camera.value, status: status.value, from: localMs(from.value), until: localMs(until.value), limit: 48, after,
        prelabeled: prelabeled.checked || undefined,
      }));
      ids.push(...page.items.map((f) => f.id));
      setNav(ids, '/queue');
      list.append(...page.items.map((f) => frameCard(f)));
      if (!ids.length) list.append(h('p', { class: 'muted' }, 'No frames match these filters.'));
      after = page.next_after;
      more.classList.toggle('hidden', after === null);
    } catch (e) { fail(e); }
  }

  async function start(q: Queue): Promise<void> {
    try {
      const f = await api<Frame | undefined>('POST', `/queues/${q.id}/claim`);
      if (!f) { toast(`Queue “${q.name}” is done: nothing left to label.`); return; }
      if (!ids.includes(f.id)) setNav([f.id, ...ids.filter((i) => i > f.id)], '/queue');
      ctx.navigate(`/frames/${f.id}`);
    } catch (e) { fail(e); }
  }

  async function loadQueues(): Promise<void> {
    try {
      const qs = await get<Queue[]>('/queues');
      const why = await emptyBox();
      clear(queues, why, qs.map((q) => {
        const c = q.counts;
        const todo = (c.new ?? 0) + (c.in_progress ?? 0) + (c.rejected ?? 0);
        return h('div', { class: 'card', 'data-queue': String(q.id) },
          h('h3', null, q.name),
          progress(c),
          h('p', { class: 'muted' }, `${c.new ?? 0} new · ${c.in_progress ?? 0} in progress · ${c.rejected ?? 0} returned · ${c.annotated ?? 0} to review · ${c.accepted ?? 0} accepted`),
          h('button', { class: 'primary', disabled: todo === 0, onclick: () => start(q) }, todo ? `Label next frame (${todo} left)` : why ? 'Nothing to label' : 'All done'));
      }));
    } catch (e) { fail(e); }
  }

  more.addEventListener('click', () => loadFrames(false));
  for (const el of [camera, status, from, until, prelabeled]) el.addEventListener('change', () => loadFrames(true));
  root.append(
    h('h1', null, 'Work queue'), queues,
    h('h2', null, 'Frames'),
    h('div', { class: 'row', role: 'search' },
      h('div', null, h('label', { for: 'f-camera' }, 'Camera'), camera),
      h('div', null, h('label', { for: 'f-status' }, 'Status'), status),
      h('div', null, h('label', { for: 'f-from' }, 'From'), from),
      h('div', null, h('label', { for: 'f-until' }, 'Until'), until),
      h('label', { class: 'inline', for: 'f-pre' }, prelabeled, 'With pre-labels only')),
    h('p'), list, h('p'), more);
  get<{ id: string }[]>('/cameras').then((cs) => {
    camera.append(...cs.map((c) => h('option', { value: c.id }, c.id)));
    camera.value = saved.camera ?? '';
  }).catch(() => {}).finally(() => loadFrames(true));
  loadQueues();
}

/** Why an annotator sees no frame at all, when none is visible: frames are stored (or
 * dropped at capture) that no consent lets anyone annotate, or the cameras stored none
 * yet. Null when some frame is visible (then an empty queue means the work is done). */
async function emptyBox(): Promise<HTMLElement | null> {
  const visible = await get<{ items: Frame[] }>('/frames?limit=1');
  if (visible.items.length) return null;
  const s = await get<Status>('/status');
  const refused = s.cameras.reduce((n, c) => n + (c.dropped.no_consent ?? 0), 0);
  if (s.storage.frames || refused) {
    return h('div', { class: 'banner', role: 'alert', id: 'no-consent' },
      h('h2', null, 'No consent covers any frame yet'),
      h('p', null, `${s.storage.frames ? `${s.storage.frames} frame(s) are stored` : `${refused} frame(s) were dropped at capture`}, but no active consent with the annotate purpose covers them, so nobody may label them. A steward records one under Consent (or runs obscura consent add --purpose annotate on the box); it covers the frames captured from then on.`));
  }
  return h('div', { class: 'banner info', id: 'no-frames' }, h('h2', null, 'No frames yet'),
    h('p', null, 'The cameras have not stored a frame yet. The Device page shows whether they are up.'));
}

// ---- Review ----

export function review(root: HTMLElement): void {
  const list = h('div', { class: 'thumbs' });
  root.append(h('h1', null, 'Review'), h('p', null, 'Frames whose annotations wait for a decision. Open one to accept it, or reject it with a comment that sends it back to the queue.'), list);
  get<{ items: Frame[] }>('/frames' + query({ status: 'annotated', limit: 200 })).then((page) => {
    setNav(page.items.map((f) => f.id), '/review');
    clear(list, page.items.length ? page.items.map((f) => frameCard(f)) : h('p', { class: 'muted' }, 'Nothing to review right now.'));
  }, fail);
}

// ---- Label schema (admins) ----

/** Colours told apart with every common colour-vision deficiency: Okabe and Ito's, in
 * the order the box's starter labels take them, then Paul Tol's muted scheme. A new
 * label gets the first one not in use. */
const PALETTE = ['#e69f00', '#56b4e9', '#009e73', '#f0e442', '#0072b2', '#d55e00', '#cc79a7', '#000000',
  '#332288', '#88ccee', '#44aa99', '#117733', '#999933', '#ddcc77', '#cc6677', '#882255', '#aa4499'];
const nextColour = (used: string[]) => PALETTE.find((c) => !used.includes(c.toLowerCase())) ?? PALETTE[used.length % PALETTE.length];

export function labels(root: HTMLElement, ctx: Ctx, search: string): void {
  let schema: Label[] = [];
  const list = h('div');
  const draw = () => clear(list, schema.map((l, i) => {
    const name = h('input', { value: l.name, 'aria-label': 'Label name', onchange: (e: Event) => { l.name = (e.target as HTMLInputElement).value.trim(); } });
    const color = h('input', { type: 'color', value: l.color, 'aria-label': 'Colour', onchange: (e: Event) => { l.color = (e.target as HTMLInputElement).value; } });
    const shape = h('select', { 'aria-label': 'Shape', onchange: (e: Event) => { l.shape = (e.target as HTMLSelectElement).value as Label['shape']; } },
      ['any', 'box', 'polygon'].map((s) => h('option', { value: s, selected: s === l.shape }, s)));
    return h('div', { class: 'card', 'data-label': l.name },
      h('div', { class: 'row' }, h('div', { class: 'grow' }, h('label', null, 'Name'), name), h('div', null, h('label', null, 'Colour'), color),
        h('div', null, h('label', null, 'Shape'), shape),
        h('button', { 'aria-label': `Move ${l.name} up`, disabled: i === 0, onclick: () => { [schema[i - 1], schema[i]] = [schema[i], schema[i - 1]]; draw(); } }, '↑'),
        h('button', { class: 'danger', 'aria-label': `Remove ${l.name}`, onclick: async () => {
          if (!await confirmAction(`Remove the label “${l.name}”?`, 'Annotators can no longer pick it once the schema is saved. Saved annotations keep the name.', 'Remove')) return;
          schema.splice(i, 1);
          draw();
        } }, 'Remove…')),
      h('label', null, 'Instructions for annotators (shown beside the label)'),
      h('textarea', { 'aria-label': `Instructions for ${l.name}`, maxlength: '2000', rows: '2', placeholder: 'What counts, what does not, how tight the box is',
        value: l.instructions ?? '', onchange: (e: Event) => { l.instructions = (e.target as HTMLTextAreaElement).value; } }),
      example(l),
      h('h3', null, 'Attributes'),
      l.attributes.map((a, j) => attributeRow(a, () => { l.attributes.splice(j, 1); draw(); })),
      h('button', { onclick: () => { l.attributes.push({ name: '', kind: 'text', choices: [], default: '' }); draw(); } }, '+ Attribute'));
  }));
  /** The label's example, cut from a frame; set from the annotator's selected shape. */
  const example = (l: Label) => {
    if (!l.example) return h('p', { class: 'muted' }, 'No example. To add one, open a frame, select a shape of this label and choose “Use as the example”.');
    const img = h('img', { alt: `The example of ${l.name}` });
    void exampleUrl(l.name, l.example.frame, l.example.box).then((url) => { if (url) img.src = url; else img.replaceWith(h('span', { class: 'muted' }, 'Its frame can no longer be opened.')); });
    return h('figure', { class: 'guide' }, img,
      h('figcaption', null, `Example from frame ${l.example.frame}. `,
        h('button', { 'aria-label': `Remove the example of ${l.name}`, onclick: () => { l.example = null; draw(); } }, 'Remove example')));
  };
  const welcome = search.includes('welcome') ? [
    h('section', { class: 'banner info', id: 'welcome' },
      h('h2', null, 'Welcome: first, the labels'),
      h('p', null, 'Annotators pick from these labels. The box starts with a set for people and vehicles (and the pre-labeller’s classes): rename, recolour, add or remove labels, then save. This page stays under Labels.'),
      h('div', { class: 'row' }, h('a', { class: 'button', href: '/queue' }, 'Keep these, go to the queue')))] : [];
  root.append(h('h1', null, 'Label schema'),
    ...welcome,
    h('p', null, 'What annotators pick from, in this order (the first nine get keys 1–9). Saved annotations keep their label names.'),
    list,
    h('p', { class: 'row' },
      h('button', { onclick: () => { schema.push({ name: `label-${schema.length + 1}`, color: nextColour(schema.map((l) => l.color.toLowerCase())), shape: 'any', attributes: [] }); draw(); } }, '+ Label'),
      h('button', { class: 'primary', onclick: async () => {
        try {
          schema = await api<Label[]>('PUT', '/labels', schema.map((l) => ({ ...l, attributes: l.attributes.filter((a) => a.name) })));
          ctx.labelsSaved(JSON.parse(JSON.stringify(schema)));
          toast('Label schema saved.');
          draw();
        } catch (e) { fail(e); }
      } }, 'Save schema')));
  ctx.labels().then((ls) => { schema = JSON.parse(JSON.stringify(ls)); draw(); }, fail);
}

function attributeRow(a: Attribute, remove: () => void): HTMLElement {
  const choices = h('input', { value: a.choices.join(', '), placeholder: 'choices, comma separated', 'aria-label': 'Choices', disabled: a.kind !== 'select',
    onchange: (e: Event) => { a.choices = (e.target as HTMLInputElement).value.split(',').map((c) => c.trim()).filter(Boolean); } });
  return h('div', { class: 'attr-row' },
    h('input', { value: a.name, placeholder: 'name', 'aria-label': 'Attribute name', onchange: (e: Event) => { a.name = (e.target as HTMLInputElement).value.trim(); } }),
    h('select', { 'aria-label': 'Kind', onchange: (e: Event) => { a.kind = (e.target as HTMLSelectElement).value as Attribute['kind']; choices.disabled = a.kind !== 'select'; } },
      ['text', 'number', 'checkbox', 'select'].map((k) => h('option', { value: k, selected: k === a.kind }, k))),
    choices,
    h('input', { value: a.default, placeholder: 'default', 'aria-label': 'Default', onchange: (e: Event) => { a.default = (e.target as HTMLInputElement).value; } }),
    h('button', { 'aria-label': `Remove attribute ${a.name}`, onclick: remove }, '✕'));
}

// ---- Consent, erasure and access (stewards; admins read) ----

interface Consent {
  id: string; scope: string | { kind: string; name?: string }; covered: string; legal_basis: string; purposes: string[];
  valid_from: number; valid_until: number | null; evidence_sha256: string | null; recorded_by: string; recorded_at: number;
  withdrawn_at: number | null; frames: number;
}
const scopeText = (s: Consent['scope']) => (typeof s === 'string' ? s : s.name ? `${s.kind}:${s.name}` : s.kind);

export function consents(root: HTMLElement, ctx: Ctx): void {
  const steward = ctx.user.role === 'steward';
  const list = h('div', { class: 'cards' });
  const load = () => get<Consent[]>('/consents').then((cs) => clear(list, cs.length ? cs.map((c) => h('div', { class: 'card', 'data-consent': c.id },
    h('h3', null, scopeText(c.scope), ' ', h('span', { class: `badge ${c.withdrawn_at ? 'withdrawn' : 'active'}` }, c.withdrawn_at ? 'withdrawn' : 'active')),
    h('dl', { class: 'kv' },
      h('dt', null, 'Covers'), h('dd', null, c.covered),
      h('dt', null, 'Legal basis'), h('dd', null, c.legal_basis),
      h('dt', null, 'Purposes'), h('dd', null, c.purposes.join(', ')),
      h('dt', null, 'Valid'), h('dd', null, `${fmtTime(c.valid_from)} → ${c.valid_until ? fmtTime(c.valid_until) : 'open'}`),
      h('dt', null, 'Frames'), h('dd', null, String(c.frames)),
      h('dt', null, 'Recorded'), h('dd', null, `${c.recorded_by}, ${fmtTime(c.recorded_at)}`),
      c.withdrawn_at ? [h('dt', null, 'Withdrawn'), h('dd', null, fmtTime(c.withdrawn_at))] : null,
      c.evidence_sha256 ? [h('dt', null, 'Evidence'), h('dd', null, h('code', null, c.evidence_sha256.slice(0, 16) + '…'))] : null),
    steward && !c.withdrawn_at ? h('p', { class: 'row' },
      h('button', { class: 'danger', onclick: async () => {
        if (!await confirmAction('Withdraw this consent?', `Its ${c.frames} frame(s) stop being eligible at once for ${c.purposes.join(', ')}. This cannot be undone; a new consent can be recorded later.`, 'Withdraw')) return;
        try { await api('POST', `/consents/${encodeURIComponent(c.id)}/withdraw`); toast('Consent withdrawn.'); load(); } catch (e) { fail(e); }
      } }, 'Withdraw…'),
      h('button', { onclick: async () => {
        if (!await confirmAction('Erase this consent’s frames?', `All ${c.frames} frame(s) linked to this consent are deleted from the box, with their annotations. A tombstone stays for the hub.`, 'Erase')) return;
        erase({ consent: c.id, reason: `consent ${c.id} erasure` });
      } }, 'Erase its frames…')) : null)) : h('p', { class: 'muted' }, 'No consent recorded: frames are stored but nobody may annotate them.')), fail);

  async function erase(body: Record<string, unknown>): Promise<void> {
    try {
      const r = await api<{ frames: number; bytes: number }>('POST', '/erasures', body);
      toast(`Erased ${r.frames} frame(s), ${fmtBytes(r.bytes)}.`);
      load();
    } catch (e) { fail(e); }
  }

  root.append(h('h1', null, 'Consent'),
    ...(steward ? [] : [h('p', { class: 'banner info', id: 'steward-only' }, 'Only a steward records or withdraws consent, erases frames and answers access requests; admins read them here. To act, log in as a steward, or make an account a steward under Users.')]),
    list, datasets(), ...(ctx.user.role === 'admin' ? [importer()] : []));
  if (steward) {
    const scope = h('input', { id: 'c-scope', value: 'device', placeholder: 'device, camera:ID or zone:NAME', required: true });
    const covered = h('input', { id: 'c-covered', required: true, placeholder: 'e.g. site staff who signed the form' });
    const basis = h('input', { id: 'c-basis', required: true, placeholder: 'e.g. consent (GDPR 6(1)(a))' });
    const purposes = ['annotate', 'sync', 'train'].map((p) => h('input', { type: 'checkbox', value: p, checked: p === 'annotate', id: `c-${p}` }));
    const validFrom = h('input', { id: 'c-from', type: 'datetime-local' });
    const until = h('input', { id: 'c-until', type: 'datetime-local' });
    const evidence = h('input', { id: 'c-evidence', placeholder: 'SHA-256 of the signed form (optional)', pattern: '[0-9a-fA-F]{64}' });
    root.append(h('h2', null, 'Record a consent'), h('form', { class: 'card', onsubmit: async (e: Event) => {
      e.preventDefault();
      try {
        await api('POST', '/consents', {
          scope: scope.value.trim(), covered: covered.value.trim(), legal_basis: basis.value.trim(),
          purposes: purposes.filter((p) => p.checked).map((p) => p.value), valid_from: localMs(validFrom.value), valid_until: localMs(until.value), evidence_sha256: evidence.value.trim() || undefined,
        });
        toast('Consent recorded.');
        (e.target as HTMLFormElement).reset();
        load();
      } catch (err) { fail(err); }
    } },
    h('label', { for: 'c-scope' }, 'Scope'), scope,
    h('label', { for: 'c-covered' }, 'Who is covered'), covered,
    h('label', { for: 'c-basis' }, 'Legal basis'), basis,
    h('label', null, 'Purposes'), h('div', { class: 'row' }, purposes.map((p) => h('label', { class: 'inline', for: p.id }, p, p.value))),
    h('p', { class: 'muted', id: 'c-covers' }, 'A consent covers the frames captured from its start (valid from) until it ends or is withdrawn. Frames captured before it stay uncovered: nobody may annotate, export or sync them.'),
    h('div', { class: 'row' },
      h('div', null, h('label', { for: 'c-from' }, 'Valid from (empty: now)'), validFrom),
      h('div', null, h('label', { for: 'c-until' }, 'Valid until (optional)'), until)),
    h('label', { for: 'c-evidence' }, 'Evidence'), evidence,
    h('p', null, h('button', { class: 'primary', type: 'submit' }, 'Record consent'))));

    const camera = h('input', { id: 'e-camera', placeholder: 'camera id', required: true });
    const from = h('input', { id: 'e-from', type: 'datetime-local', required: true });
    const to = h('input', { id: 'e-until', type: 'datetime-local', required: true });
    const reason = h('input', { id: 'e-reason', placeholder: 'request reference, e.g. DSR-2026-014' });
    const window_ = () => ({ camera: camera.value.trim(), from: localMs(from.value), until: localMs(to.value) });
    const accessMeter = meter();
    root.append(h('h2', null, 'Data subject requests'), h('div', { class: 'card' },
      h('p', null, 'A person asks what the box holds of them, or asks for it to be erased: name the camera and the time window.'),
      h('div', { class: 'row' }, h('div', null, h('label', { for: 'e-camera' }, 'Camera'), camera), h('div', null, h('label', { for: 'e-from' }, 'From'), from),
        h('div', null, h('label', { for: 'e-until' }, 'Until'), to)),
      h('label', { for: 'e-reason' }, 'Reason (for erasure; kept in the audit log)'), reason,
      h('p', { class: 'row' },
        h('button', { onclick: async () => {
          const w = window_();
          if (!w.camera || !w.from || !w.until) { toast('Name the camera and the window first.', true); return; }
          if (!await confirmAction('Export for an access request?', `A zip of ${w.camera}'s frames (anonymized, as stored), their metadata and audit entries between ${fmtTime(w.from)} and ${fmtTime(w.until)}. The export is audited.`, 'Export')) return;
          try {
            await tracked((t) => download('POST', '/access-exports', { ...w, progress: t }, (got, all) => accessMeter.set(`Downloading ${fmtBytes(got)} of ${fmtBytes(all)}`, got, all)),
              (s) => accessMeter.set(`Packing frame ${s.done} of ${s.total}`, s.done, s.total));
          } catch (e) { fail(e); } finally { accessMeter.clear(); }
        } }, 'Access export…'),
        h('button', { class: 'danger', onclick: async () => {
          const w = window_();
          if (!w.camera || !w.from || !w.until || !reason.value.trim()) { toast('Name the camera, the window and the reason first.', true); return; }
          if (!await confirmAction('Erase these frames for good?', `Every frame of ${w.camera} between ${fmtTime(w.from)} and ${fmtTime(w.until)} is deleted with its annotations. This cannot be undone.`, 'Erase')) return;
          erase({ ...w, reason: reason.value.trim() });
        } }, 'Erase…')), accessMeter.el));
  }
  load();
}

/** A progress bar with a line of text, hidden until work starts. */
function meter(): { el: HTMLElement; set: (text: string, done: number, total: number) => void; clear: () => void } {
  const bar = h('progress', { max: '1' });
  const text = h('span');
  const el = h('div', { class: 'meter', role: 'status', hidden: true }, bar, text);
  return {
    el,
    set: (t, done, total) => { el.hidden = false; text.textContent = t; bar.max = total || 1; bar.value = done; },
    clear: () => { el.hidden = true; },
  };
}

/** Dataset downloads (admins and stewards): the same zip as `obscura export`, only
 * frames an active consent gives the purpose, audited on the box. */
function datasets(): HTMLElement {
  const format = h('select', { id: 'x-format' }, [['coco', 'COCO 1.0'], ['cvat', 'CVAT for images 1.1'], ['yolo', 'Ultralytics YOLO'],
    ['voc', 'Pascal VOC'], ['labelstudio', 'Label Studio (pre-labels as predictions)']].map(([v, t]) => h('option', { value: v }, t)));
  const camera = h('input', { id: 'x-camera', placeholder: 'all cameras' });
  const status = h('select', { id: 'x-status' }, h('option', { value: '' }, 'Any status'), STATUSES.map((s) => h('option', { value: s }, s.replace('_', ' '))));
  const purpose = h('select', { id: 'x-purpose' }, ['train', 'sync', 'annotate'].map((p) => h('option', { value: p }, p)));
  const redactions = h('input', { id: 'x-redactions', type: 'checkbox' });
  const refused = h('p', { class: 'error', id: 'x-error', role: 'alert' });
  const m = meter();
  return h('section', null, h('h2', null, 'Datasets'), h('div', { class: 'card' },
    h('p', null, 'Download the anonymized frames and their annotations for CVAT, COCO tools, YOLO or Label Studio. Only frames whose consent gives the purpose go; every download is audited.'),
    h('div', { class: 'row' },
      h('div', null, h('label', { for: 'x-format' }, 'Format'), format),
      h('div', null, h('label', { for: 'x-camera' }, 'Camera'), camera),
      h('div', null, h('label', { for: 'x-status' }, 'Status'), status),
      h('div', null, h('label', { for: 'x-purpose' }, 'Purpose'), purpose)),
    h('label', { class: 'inline', for: 'x-redactions' }, redactions, 'Include the redacted faces and plates as pre-labels'),
    refused,
    h('p', null, h('button', { class: 'primary', id: 'x-download', onclick: async () => {
      const q = new URLSearchParams({ format: format.value, purpose: purpose.value });
      if (camera.value.trim()) q.set('camera', camera.value.trim());
      if (status.value) q.set('status', status.value);
      if (redactions.checked) q.set('redactions', 'true');
      refused.textContent = '';
      try {
        await tracked((t) => { q.set('progress', t); return download('GET', `/exports?${q}`, undefined, (got, all) => m.set(`Downloading ${fmtBytes(got)} of ${fmtBytes(all)}`, got, all)); },
          (s) => m.set(`Packing image ${s.done} of ${s.total}`, s.done, s.total));
        toast('Dataset downloaded.');
      } catch (e) {
        // Nothing to export says why (no frame matches, or none is consented for the purpose).
        if (e instanceof ApiError && e.status === 409) refused.textContent = `Nothing downloaded: ${e.message}.`;
        else fail(e);
      } finally { m.clear(); }
    } }, 'Download dataset')), m.el));
}

/** Annotations back from CVAT or a COCO tool (admins), as `obscura import` merges them:
 * a new annotation version for each frame the file names. */
function importer(): HTMLElement {
  const file = h('input', { id: 'i-file', type: 'file', accept: '.json,.xml' });
  const dry = h('input', { id: 'i-dry', type: 'checkbox' });
  const m = meter();
  const result = h('div', { id: 'i-result', role: 'status' });
  return h('section', null, h('h2', null, 'Import annotations'), h('div', { class: 'card' },
    h('p', null, 'A COCO JSON or CVAT for images XML file, as exported from here: each frame it names (by file name, else id) gets its shapes as a new annotation version; older versions stay.'),
    h('div', { class: 'row' }, h('div', { class: 'grow' }, h('label', { for: 'i-file' }, 'File (up to 2 MB; larger: obscura import on the box)'), file)),
    h('label', { class: 'inline', for: 'i-dry' }, dry, 'Dry run: say what would change, change nothing'),
    h('p', null, h('button', { class: 'primary', id: 'i-import', onclick: async () => {
      const f = file.files?.[0];
      if (!f) { toast('Choose a COCO .json or CVAT .xml file first.', true); return; }
      if (f.size > 2 << 20) { toast(`${f.name} is ${fmtBytes(f.size)}: import files over 2 MB with obscura import on the box.`, true); return; }
      const format = f.name.toLowerCase().endsWith('.xml') ? 'cvat' : 'coco';
      clear(result);
      try {
        const r = await tracked(async (t) => (await request('POST', `/imports${query({ format, name: f.name, dry_run: dry.checked, progress: t })}`, f, 3600000)).json(),
          (s) => m.set(`Importing image ${s.done} of ${s.total}`, s.done, s.total));
        const verb = dry.checked ? 'would update' : 'updated';
        append(result, [h('p', null, `${r.images} image(s) in ${f.name}: matched ${r.by_name} by file name and ${r.by_id} by id; ${verb} ${r.updated} frame(s) with ${r.shapes} shape(s), ${r.unchanged} unchanged.`),
          r.unmatched.length ? h('p', { class: 'error' }, `Not matched (no frame has this file name or id): ${r.unmatched.slice(0, 20).join(', ')}${r.unmatched.length > 20 ? ` and ${r.unmatched.length - 20} more` : ''}`) : null,
          r.refused.length ? h('p', { class: 'error' }, `Refused: ${r.refused.slice(0, 5).join('; ')}`) : null]);
      } catch (e) { fail(e); } finally { m.clear(); }
    } }, 'Import')), m.el, result));
}

// ---- Live view ----

export function live(root: HTMLElement): () => void {
  const grid = h('div', { class: 'live' });
  root.append(h('h1', null, 'Live'), h('p', null, 'Anonymized frames only, as they leave the anonymizer: at most 2 a second, 640 px wide. Nothing else ever leaves the box.'), grid);
  get<{ id: string; state: string; fps: number }[]>('/cameras').then((cs) => clear(grid, cs.length ? cs.map((c) => h('figure', null,
    h('img', { src: `/api/v1/cameras/${encodeURIComponent(c.id)}/live`, alt: `Live view of ${c.id}, anonymized`, 'data-camera': c.id }),
    h('figcaption', null, h('strong', null, c.id), h('span', { class: `badge ${c.state}` }, c.state), h('span', { class: 'muted' }, 'anonymized')))) : h('p', null, 'No cameras configured.')), fail);
  // Leaving the screen closes the streams: the box stops encoding for them.
  return () => grid.querySelectorAll('img').forEach((i) => { i.src = ''; i.removeAttribute('src'); });
}

// ---- Device dashboard ----

interface Status {
  version: string; board: string; uptime_seconds: number; ready: boolean;
  cameras: { id: string; source: string; state: string; reason?: string; fps: number; captured: number; dropped: Record<string, number>; anonymized: number; faces_redacted: number; plates_redacted: number; stored: number; anonymize_ms: number; last_frame_age_seconds: number | null }[];
  system: { rss_bytes: number; cpu_percent: number; cores: number; disk_free_bytes: number; disk_total_bytes: number; soc_temp_celsius: number | null };
  storage: { frames: number; disk_bytes: number; refusing_new_frames: boolean; last_retention: null | { finished_at_ms: number; seconds_ago: number; removed: number; freed_bytes: number; outcome: string } };
  prelabel: { enabled: boolean; done: number; backlog: number; deferred: number; last_ms: number };
  sync: { state: string; hub: string | null; key: string; mqtt: string; paused: boolean; outside_window: boolean; backlog_frames: number; backlog_bytes: number; oldest_age_seconds: number | null; batches_pending: number; erasures_pending: number; expired_unsynced: number; bytes_sent: number; commits: number; rejects: number; retries: number; last_receipt_ms: number | null; last_error: string | null };
}

/// Drop reasons that are sampling at work, not faults, and plain words for the metric names.
const SAMPLING = ['fps_cap', 'interval', 'unchanged'];
const DROP_WORDS: Record<string, string> = {
  fps_cap: 'above the fps cap', interval: 'inside the interval', unchanged: 'unchanged', queue_full: 'busy (queue full)',
  no_consent: 'no consent', detector_error: 'detector failed', deadline: 'detection too slow',
};

/// What a box's sync state means, for the card's first line.
const SYNC_STATE: Record<string, string> = {
  off: 'off', not_enrolled: 'not enrolled (obscura sync enrol)', pending: 'waiting for approval on the hub',
  approved: 'approved', revoked: 'REVOKED by the hub: nothing is sent',
};

export function device(root: HTMLElement): () => void {
  const body = h('div');
  root.append(h('h1', null, 'Device'), body);
  const kv = (pairs: [string, string | number][]) => h('dl', { class: 'kv' }, pairs.map(([k, v]) => [h('dt', null, k), h('dd', null, String(v))]));
  const refresh = () => get<Status>('/status').then((s) => {
    const sys = s.system, st = s.storage, r = st.last_retention;
    const used = sys.disk_total_bytes ? 100 - (sys.disk_free_bytes / sys.disk_total_bytes) * 100 : 0;
    clear(body,
      h('div', { class: 'cards' },
        h('div', { class: 'card' }, h('h3', null, 'System'), kv([
          ['Board', s.board], ['Version', s.version], ['Uptime', fmtDuration(s.uptime_seconds)],
          ['CPU', `${sys.cpu_percent.toFixed(0)} % of ${sys.cores} cores`],
          ['Temperature', sys.soc_temp_celsius === null ? 'no sensor' : `${sys.soc_temp_celsius.toFixed(1)} °C`],
          ['Memory', fmtBytes(sys.rss_bytes)], ['Disk', `${fmtBytes(sys.disk_free_bytes)} free of ${fmtBytes(sys.disk_total_bytes)} (${used.toFixed(0)} % used)`]])),
        h('div', { class: 'card' }, h('h3', null, 'Storage'), kv([
          ['Frames', st.frames], ['On disk', fmtBytes(st.disk_bytes)], ['New frames', st.refusing_new_frames ? 'REFUSED: disk low' : 'accepted'],
          ['Last retention', r ? `${fmtTime(r.finished_at_ms)} (${Math.round(r.seconds_ago)} s ago)` : 'not run yet'],
          ['Removed', r ? `${r.removed} frames, ${fmtBytes(r.freed_bytes)}, ${r.outcome}` : '—']])),
        h('div', { class: 'card' }, h('h3', null, 'Pre-labels'), kv([
          ['Enabled', s.prelabel.enabled ? 'yes' : 'no'], ['Done', s.prelabel.done], ['Backlog', s.prelabel.backlog], ['Last', `${s.prelabel.last_ms} ms`]])),
        syncCard(s.sync, kv)),
      h('h2', null, 'Cameras'),
      h('div', { class: 'cards' }, s.cameras.map((c) => {
        // Sampling (sample.fps, sample.interval, sample.on_change) skips frames by design;
        // the rest are real losses. The metric names stay; the words differ.
        const list = (sampling: boolean) => Object.entries(c.dropped).filter(([why, n]) => n && SAMPLING.includes(why) === sampling)
          .map(([why, n]) => `${n} ${DROP_WORDS[why] ?? why.replace('_', ' ')}`).join(', ') || 'none';
        return h('div', { class: 'card', 'data-camera': c.id }, h('h3', null, c.id, ' ', h('span', { class: `badge ${c.state}` }, c.state)),
          c.reason ? h('p', { class: 'error' }, c.reason) : null,
          kv([['fps', c.fps.toFixed(2)], ['Captured', c.captured], ['Skipped by sampling', list(true)], ['Dropped', list(false)], ['Anonymized', `${c.anonymized} (${c.anonymize_ms} ms each)`],
            ['Redacted', `${c.faces_redacted} faces, ${c.plates_redacted} plates`], ['Stored', c.stored],
            ['Last frame', c.last_frame_age_seconds === null ? '—' : `${c.last_frame_age_seconds.toFixed(1)} s ago`]]));
      })));
  }, fail);
  refresh();
  const timer = setInterval(refresh, 5000);
  return () => clearInterval(timer);
}

function syncCard(y: Status['sync'], kv: (pairs: [string, string | number][]) => HTMLElement): HTMLElement {
  const state = SYNC_STATE[y.state] ?? y.state;
  const when = y.paused ? 'paused by the hub' : y.outside_window ? 'outside the sync windows' : 'sending';
  return h('div', { class: 'card', 'data-card': 'sync' }, h('h3', null, 'Sync ', h('span', { class: `badge ${y.state}` }, y.state)),
    y.last_error ? h('p', { class: 'error' }, y.last_error) : null,
    kv([
      ['Hub', y.hub ?? '—'], ['State', y.state === 'approved' ? `${state}, ${when}` : state], ['Key', y.key || '—'], ['MQTT', y.mqtt],
      ['Backlog', `${y.backlog_frames} frames, ${fmtBytes(y.backlog_bytes)}${y.oldest_age_seconds === null ? '' : `, oldest ${Math.round(y.oldest_age_seconds / 60)} min`}`],
      ['Batches', `${y.batches_pending} pending, ${y.commits} committed, ${y.rejects} refused`], ['Erasures pending', y.erasures_pending],
      ['Sent', fmtBytes(y.bytes_sent)], ['Last receipt', y.last_receipt_ms === null ? 'never' : fmtTime(y.last_receipt_ms)],
      ['Expired unsynced', y.expired_unsynced]]));
}

// ---- Users (admins) ----

const ROLE_CAN: Record<string, string> = {
  annotator: 'Annotators label frames.', reviewer: 'Reviewers label frames and accept or return them.',
  steward: 'Stewards record and withdraw consent, erase frames, answer access requests and download datasets.',
  admin: 'Admins manage users, the label schema and queues, label and review, read consents and the audit log, and download datasets.',
};

export function users(root: HTMLElement, ctx: Ctx): void {
  const ROLES = ['annotator', 'reviewer', 'steward', 'admin'];
  const table = h('tbody');
  const load = () => get<User[]>('/users').then((us) => clear(table, us.map((u) => h('tr', { 'data-user': u.name },
    h('td', null, h('strong', null, u.name), u.disabled ? h('span', { class: 'badge withdrawn' }, ' disabled') : null),
    h('td', null, h('select', { 'aria-label': `Role of ${u.name}`, disabled: u.id === ctx.user.id, onchange: async (e: Event) => {
      const select = e.target as HTMLSelectElement, role = select.value;
      const admin = role === 'admin';
      if (!await confirmAction(admin ? `Make ${u.name} an admin?` : `Make ${u.name} ${role === 'annotator' ? 'an' : 'a'} ${role}?`,
        `${ROLE_CAN[role]} ${admin ? 'An admin can also make other admins and change your own account. ' : ''}Their sessions end now; they log in again.`,
        admin ? 'Grant admin' : 'Change role')) { select.value = u.role; return; }
      try { await api('PATCH', `/users/${u.id}`, { role }); toast(`${u.name} is now ${role}.`); load(); } catch (err) { fail(err); load(); }
    } }, ROLES.map((r) => h('option', { value: r, selected: r === u.role }, r)))),
    h('td', null, fmtTime(u.created_at)),
    h('td', { class: 'row' },
      h('button', { disabled: u.id === ctx.user.id, onclick: async () => {
        if (!u.disabled && !await confirmAction(`Disable ${u.name}?`, 'Their sessions end at once and they cannot log in until enabled again.', 'Disable')) return;
        try { await api('PATCH', `/users/${u.id}`, { disabled: !u.disabled }); load(); } catch (err) { fail(err); }
      } }, u.disabled ? 'Enable' : 'Disable…'),
      h('button', { onclick: async () => {
        const pw = h('input', { type: 'password', autocomplete: 'new-password', minlength: '12', 'aria-label': 'New password' });
        const { value } = await dialog(`New password for ${u.name}`, [h('label', null, 'Password (12 characters or more)'), pw], [{ label: 'Cancel', value: '' }, { label: 'Set password', value: 'set', class: 'primary' }]);
        if (value !== 'set') return;
        try { await api('POST', `/users/${u.id}/password`, { password: pw.value }); toast('Password set; their sessions ended.'); } catch (err) { fail(err); }
      } }, 'Password…'))))), fail);
  const name = h('input', { id: 'u-name', autocapitalize: 'none', required: true });
  const role = h('select', { id: 'u-role' }, ROLES.map((r) => h('option', { value: r }, r)));
  const password = h('input', { id: 'u-password', type: 'password', autocomplete: 'new-password', minlength: '12', required: true });
  root.append(h('h1', null, 'Users'),
    h('div', { class: 'scroll-x' }, h('table', null, h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'Role'), h('th', null, 'Created'), h('th', null, ''))), table)),
    h('h2', null, 'Add a user'),
    h('form', { class: 'card', onsubmit: async (e: Event) => {
      e.preventDefault();
      try {
        await api('POST', '/users', { name: name.value.trim(), role: role.value, password: password.value });
        toast(`${name.value} added.`);
        (e.target as HTMLFormElement).reset();
        load();
      } catch (err) { fail(err instanceof ApiError ? err : err); }
    } },
    h('div', { class: 'row' }, h('div', { class: 'grow' }, h('label', { for: 'u-name' }, 'Name'), name), h('div', null, h('label', { for: 'u-role' }, 'Role'), role),
      h('div', { class: 'grow' }, h('label', { for: 'u-password' }, 'Password'), password),
      h('button', { class: 'primary', type: 'submit' }, 'Add user'))));
  load();
}
