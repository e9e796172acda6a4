// The app shell: who is logged in, the navigation their role allows, the save
// indicator, and a small router over the History API (the box serves index.html for
// every screen's path, so reloads and bookmarks work).

import { annotateScreen } from './annotate';
import { ApiError, api, forgetKept, get, onOffline, setCsrf, whenUnauthenticated, type Label, type User } from './api';
import { clear, dialog, h } from './dom';
import { Outbox, type Conflict } from './outbox';
import * as screens from './screens';

export interface Ctx {
  user: User;
  outbox: Outbox;
  navigate: (path: string) => void;
  labels: () => Promise<Label[]>;
  /** The schema as the box answered a change to it: later screens see it. */
  labelsSaved: (ls: Label[]) => void;
  setTitle: (t: string) => void;
  showConflict: (c: Conflict, reload?: () => Promise<void>) => void;
}

type Screen = (root: HTMLElement, ctx: Ctx, arg: string) => (() => void) | void;
interface Route { path: string; title: string; roles: User['role'][]; screen: Screen; nav: boolean }
const ALL: User['role'][] = ['admin', 'annotator', 'reviewer', 'steward'];
const ROUTES: Route[] = [
  { path: '/queue', title: 'Queue', roles: ['admin', 'annotator', 'reviewer'], screen: screens.queue, nav: true },
  { path: '/review', title: 'Review', roles: ['admin', 'reviewer'], screen: screens.review, nav: true },
  { path: '/labels', title: 'Labels', roles: ['admin'], screen: screens.labels, nav: true },
  { path: '/consents', title: 'Consent', roles: ['admin', 'steward'], screen: screens.consents, nav: true },
  { path: '/live', title: 'Live', roles: ALL, screen: screens.live, nav: true },
  { path: '/device', title: 'Device', roles: ALL, screen: screens.device, nav: true },
  { path: '/users', title: 'Users', roles: ['admin'], screen: screens.users, nav: true },
];

const app = document.getElementById('app')!;
let user: User | null = null;
let outbox: Outbox | null = null;
let cleanup: (() => void) | void;
let labelCache: Promise<Label[]> | null = null;
const saveState = h('span', { class: 'save-state saved', role: 'status', 'aria-live': 'polite', 'data-state': 'saved' }, 'Saved');
// Said while the box cannot be reached: the frame and the few fetched ahead stay, edits queue.
const offlineBanner = h('p', { id: 'offline', class: 'offline hidden', role: 'status' },
  'Offline: the box cannot be reached. You keep this frame and the next few; edits are kept and sent when it is back.');
onOffline((off) => {
  offlineBanner.classList.toggle('hidden', !off);
  if (!off) outbox?.flush();
});

function updateSaveState(): void {
  if (!outbox) return;
  const n = outbox.pendingCount;
  const text: Record<string, string> = {
    saved: 'Saved', saving: `Saving… (${n})`, pending: `Pending (${n})`,
    offline: `Offline — ${n} edit${n === 1 ? '' : 's'} kept`, conflict: 'Conflict', error: 'Not saved',
  };
  const state = outbox.state;
  saveState.className = `save-state ${state}`;
  saveState.dataset.state = state;
  saveState.dataset.pending = String(n);
  saveState.textContent = text[state];
  saveState.title = outbox.lastError || text[state];
}

export function navigate(path: string, replace = false): void {
  if (replace) history.replaceState(null, '', path);
  else if (location.pathname + location.search !== path) history.pushState(null, '', path);
  render();
}

function home(u: User): string {
  return u.role === 'steward' ? '/consents' : '/queue';
}

function showConflict(c: Conflict, reload?: () => Promise<void>): void {
  void dialog('Someone else saved this frame first',
    [h('p', null, `${c.author} saved version ${c.current} of frame ${c.frame} while you were editing. Nothing has been overwritten.`),
      h('p', null, 'Load theirs (your unsaved edits of this frame are dropped), or keep yours (saved as a new version on top of theirs).')],
    [{ label: 'Load theirs', value: 'theirs' }, { label: 'Keep mine', value: 'mine', class: 'primary' }],
  ).then(async ({ value }) => {
    if (!outbox) return;
    if (value === 'mine') outbox.keepMine();
    else if (value === 'theirs') {
      outbox.takeTheirs();
      await reload?.();
    } else {
      // Dismissed: the conflict stays (and the indicator says so) until a choice is made.
      saveState.onclick = () => showConflict(c, reload);
    }
  });
}

function shell(u: User, current: string): { main: HTMLElement } {
  const links = ROUTES.filter((r) => r.nav && r.roles.includes(u.role)).map((r) =>
    h('a', { href: r.path, 'aria-current': current.startsWith(r.path) ? 'page' : undefined }, r.title));
  const main = h('main', { id: 'main' });
  clear(app,
    h('header', { class: 'top' },
      h('span', { class: 'brand' }, h('img', { src: '/icon.svg', alt: '' }), 'Obscura'),
      h('nav', { 'aria-label': 'Screens' }, links),
      saveState,
      h('button', { onclick: () => logout(), title: `Logged in as ${u.name} (${u.role})` }, `${u.name} · Log out`)),
    offlineBanner,
    main);
  return { main };
}

async function logout(): Promise<void> {
  if (outbox && outbox.pendingCount) {
    const { value } = await dialog('Edits are not saved yet', h('p', null, `${outbox.pendingCount} edit(s) wait for the box. They stay on this tablet and are sent after the next login.`), [
      { label: 'Stay', value: '' }, { label: 'Log out anyway', value: 'yes', class: 'danger' }]);
    if (value !== 'yes') return;
  }
  try { await api('POST', '/auth/logout'); } catch { /* the session may have ended already */ }
  forgetKept();
  user = null;
  navigate('/login');
}

async function render(): Promise<void> {
  if (cleanup) cleanup();
  cleanup = undefined;
  const path = location.pathname;
  app.classList.toggle('fixed', /^\/frames\/\d+$/.test(path));
  if (!user && path !== '/login' && path !== '/setup') {
    try {
      const me = await get<{ user: User; csrf: string }>('/auth/me');
      signedIn(me.user, me.csrf);
    } catch (e) {
      // The box cannot be reached and this tablet kept nothing: say so, and stay on this
      // screen, which opens once it is back (no login form for a session that may be valid).
      if (!(e instanceof ApiError)) return screens.offlineNote(app);
      const setup = await get<{ pending: boolean }>('/setup').catch(() => ({ pending: false }));
      history.replaceState(null, '', setup.pending ? '/setup' : '/login');
      return render();
    }
  }
  if (path === '/login' || path === '/setup') {
    document.title = 'Obscura';
    clear(app, h('main', { id: 'main' }));
    cleanup = (path === '/setup' ? screens.setup : screens.login)(app.querySelector('main')!, async (u, csrf) => {
      signedIn(u, csrf);
      // The first admin starts at the labels, which the box seeded: edit them or go on.
      navigate(path === '/setup' && u.role === 'admin' ? '/labels?welcome' : home(u), true);
    });
    return;
  }
  const u = user!;
  const ctx: Ctx = {
    user: u, outbox: outbox!, navigate,
    labels: () => (labelCache ??= get<Label[]>('/labels').catch((e) => { labelCache = null; throw e; })),
    labelsSaved: (ls) => { labelCache = Promise.resolve(ls); },
    setTitle: (t) => { document.title = `${t} · Obscura`; },
    showConflict,
  };
  const frame = /^\/frames\/(\d+)$/.exec(path);
  if (frame) {
    const { main } = shell(u, '/queue');
    main.className = 'full';
    cleanup = annotateScreen(main, Number(frame[1]), ctx);
    return;
  }
  const route = ROUTES.find((r) => r.path === path && r.roles.includes(u.role));
  if (!route) return navigate(home(u), true);
  const { main } = shell(u, route.path);
  ctx.setTitle(route.title);
  labelCache = route.path === '/labels' ? null : labelCache;
  cleanup = route.screen(main, ctx, location.search);
}

function signedIn(u: User, csrf: string): void {
  user = u;
  setCsrf(csrf);
  labelCache = null;
  outbox = new Outbox(`obscura.outbox.${u.name}`);
  outbox.subscribe(updateSaveState);
  outbox.onConflict = (c) => showConflict(c);
  updateSaveState();
  outbox.flush();
}

whenUnauthenticated(() => {
  forgetKept();
  if (user) {
    user = null;
    navigate('/login');
  }
});

// Links inside the app change screens without reloading it.
document.addEventListener('click', (e) => {
  const a = (e.target as HTMLElement).closest('a');
  if (!a || a.target || a.hasAttribute('download') || e.ctrlKey || e.metaKey || e.shiftKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/')) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', () => render());

if ('serviceWorker' in navigator && (location.protocol === 'https:' || location.hostname === 'localhost' || location.hostname === '127.0.0.1')) {
  navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => { /* the app works without it */ });
}

render();
