// A few lines instead of a framework: build elements, show dialogs and toasts.

type Child = Node | string | number | null | undefined | false | Child[];
type Props = Record<string, unknown> | null;

/** `h('button', {class: 'ok', onclick: f}, 'Save')`. Keys starting with `on` are
 * listeners, `class`/`text`/`value`/`checked`/`disabled`/`hidden` are properties, the
 * rest attributes. No `style` attributes: the box's CSP forbids them. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props?: Props, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v as EventListener);
    else if (k === 'class') el.className = String(v);
    else if (k === 'text') el.textContent = String(v);
    else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'hidden' || k === 'selected') (el as any)[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
}

export function clear(el: Node, ...children: Child[]): void {
  while (el.firstChild) el.removeChild(el.firstChild);
  append(el, children);
}

let toastTimer = 0;
export function toast(message: string, bad = false): void {
  document.querySelector('.toast')?.remove();
  const t = h('div', { class: bad ? 'toast bad' : 'toast', role: 'status', 'aria-live': 'polite' }, message);
  document.body.append(t);
  clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => t.remove(), bad ? 6000 : 3000);
}

/** A modal dialog; resolves with the value of the button pressed (or '' on Escape). */
export function dialog(title: string, body: Child, buttons: { label: string; value: string; class?: string }[]): Promise<{ value: string; el: HTMLDialogElement }> {
  return new Promise((resolve) => {
    const d = h('dialog', { 'aria-label': title },
      h('h2', null, title),
      body,
      h('menu', null, buttons.map((b) => h('button', { class: b.class, value: b.value, onclick: () => { done(b.value); } }, b.label))),
    );
    const done = (value: string) => {
      d.close();
      d.remove();
      resolve({ value, el: d });
    };
    d.addEventListener('cancel', (e) => { e.preventDefault(); done(''); });
    document.body.append(d);
    d.showModal();
  });
}

export async function confirmAction(title: string, message: string, action: string): Promise<boolean> {
  const { value } = await dialog(title, h('p', null, message), [
    { label: 'Cancel', value: '' },
    { label: action, value: 'yes', class: 'danger' },
  ]);
  return value === 'yes';
}

export const fmtTime = (ms: number | null | undefined): string =>
  ms ? new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' }) : '—';

export function fmtBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** A duration in the largest units that say it: "42 s", "12 min", "3 h 5 min", "2 d 4 h". */
export function fmtDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60), hh = Math.floor(m / 60), d = Math.floor(hh / 24);
  if (hh < 1) return `${m} min`;
  if (d < 1) return m % 60 ? `${hh} h ${m % 60} min` : `${hh} h`;
  return hh % 24 ? `${d} d ${hh % 24} h` : `${d} d`;
}

/** A `datetime-local` input's value as Unix ms, or undefined when empty. */
export const localMs = (v: string): number | undefined => (v ? new Date(v).getTime() : undefined);
