// Autosave that survives Wi-Fi drops and reloads. Every edit is a full snapshot of a
// frame's shapes, appended to a queue kept in localStorage; one loop sends the queue in
// order, each save based on the version the previous one returned. A failed send (no
// network) stays queued and is retried on `online` and every few seconds. A 409 (someone
// else saved first) stops that frame's saves until the person chooses: nothing is ever
// overwritten silently, and nothing is dropped without a choice.

import { ApiError, Offline, rekeep, request, type Shape } from './api';

export type SaveState = 'saved' | 'saving' | 'pending' | 'offline' | 'conflict' | 'error';
export interface Conflict { frame: number; current: number; author: string; message: string }
interface Entry { seq: number; frame: number; shapes: Shape[]; dismissed?: number[] }
interface Persisted { seq: number; entries: Entry[]; base: Record<string, number>; conflict: Conflict | null }

const RETRY_MS = 3000;

export class Outbox {
  private data: Persisted;
  private running = false;
  private offline = false;
  private error = '';
  private retryTimer = 0;
  private listeners = new Set<() => void>();
  /** Called with the new version after each save lands: the editor's base moves on. */
  onSaved: (frame: number, version: number) => void = () => {};
  onConflict: (c: Conflict) => void = () => {};

  constructor(private key: string) {
    let data: Persisted | null = null;
    try { data = JSON.parse(localStorage.getItem(key) ?? 'null'); } catch { /* start empty */ }
    this.data = data ?? { seq: 0, entries: [], base: {}, conflict: null };
    window.addEventListener('online', () => this.flush());
    window.addEventListener('offline', () => { this.offline = true; this.emit(); });
    if (this.data.entries.length) setTimeout(() => this.flush(), 0);
  }

  private persist(): void {
    localStorage.setItem(this.key, JSON.stringify(this.data));
  }

  subscribe(f: () => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  private emit(): void {
    for (const f of this.listeners) f();
  }

  get state(): SaveState {
    if (this.data.conflict) return 'conflict';
    if (this.offline && this.data.entries.length) return 'offline';
    if (this.offline && !navigator.onLine) return 'offline';
    if (this.error) return 'error';
    if (this.running) return 'saving';
    return this.data.entries.length ? 'pending' : 'saved';
  }

  get pendingCount(): number { return this.data.entries.length; }
  get conflict(): Conflict | null { return this.data.conflict; }
  get lastError(): string { return this.error; }

  /** The frame's newest unsent snapshot: what the person sees after a reload. */
  pending(frame: number): Shape[] | null {
    for (let i = this.data.entries.length - 1; i >= 0; i--) if (this.data.entries[i].frame === frame) return this.data.entries[i].shapes;
    return null;
  }

  /** The pre-labels (detection ids) rejected in the frame's newest unsent snapshot. */
  pendingDismissed(frame: number): number[] | null {
    for (let i = this.data.entries.length - 1; i >= 0; i--) if (this.data.entries[i].frame === frame) return this.data.entries[i].dismissed ?? null;
    return null;
  }

  hasPending(frame: number): boolean { return this.data.entries.some((e) => e.frame === frame); }

  /** The version the next save of `frame` builds on, as loaded from the box. Ignored
   * while saves of the frame are queued: they carry their own chain of versions. */
  setBase(frame: number, version: number): void {
    if (this.hasPending(frame) || this.data.conflict?.frame === frame) return;
    // Versions only grow: a copy kept on the tablet (offline) may be older than a save.
    this.data.base[frame] = Math.max(version, this.data.base[frame] ?? 0);
    this.persist();
  }

  base(frame: number): number { return this.data.base[frame] ?? 0; }

  save(frame: number, shapes: Shape[], dismissed?: number[]): void {
    this.data.entries.push({ seq: ++this.data.seq, frame, shapes: JSON.parse(JSON.stringify(shapes)), dismissed });
    this.persist();
    this.emit();
    this.flush();
  }

  /** Conflict choice: drop my queued saves of the frame and take theirs. */
  takeTheirs(): void {
    const c = this.data.conflict;
    if (!c) return;
    this.data.entries = this.data.entries.filter((e) => e.frame !== c.frame);
    this.data.base[c.frame] = c.current;
    this.data.conflict = null;
    this.persist();
    this.emit();
    this.flush();
  }

  /** Conflict choice: save my version as a new one on top of theirs. */
  keepMine(): void {
    const c = this.data.conflict;
    if (!c) return;
    this.data.base[c.frame] = c.current;
    this.data.conflict = null;
    this.persist();
    this.emit();
    this.flush();
  }

  /** Sends the queue, oldest first, until it is empty or something stops it. */
  async flush(): Promise<void> {
    if (this.running || this.data.conflict) return;
    clearTimeout(this.retryTimer);
    this.running = true;
    this.emit();
    try {
      while (this.data.entries.length && !this.data.conflict) {
        const entry = this.data.entries[0];
        const base = this.base(entry.frame);
        try {
          const r = await request('PUT', `/frames/${entry.frame}/annotations`, { base, shapes: entry.shapes, dismissed: entry.dismissed });
          const { version } = (await r.json()) as { version: number };
          this.offline = false;
          this.error = '';
          this.data.base[entry.frame] = version;
          this.data.entries.shift();
          this.persist();
          // The tablet's copy of the frame shows what was saved, should the box go away.
          void rekeep(`/frames/${entry.frame}/annotations`, (old) => ({ ...old, version, shapes: entry.shapes, dismissed: entry.dismissed ?? old.dismissed }));
          this.onSaved(entry.frame, version);
        } catch (e) {
          if (e instanceof Offline || (e instanceof ApiError && (e.status >= 500 || e.status === 408 || e.status === 429))) {
            this.offline = e instanceof Offline;
            this.error = e instanceof Offline ? '' : e.message;
            this.retryTimer = window.setTimeout(() => this.flush(), RETRY_MS);
            return;
          }
          if (e instanceof ApiError && e.status === 409) {
            this.data.conflict = {
              frame: entry.frame, current: e.details?.current ?? 0, author: e.details?.author ?? 'someone', message: e.message,
            };
            this.persist();
            this.onConflict(this.data.conflict);
            return;
          }
          if (e instanceof ApiError && e.status === 401) {
            // Kept: they are sent once the person logs in again.
            this.error = 'log in again to save';
            return;
          }
          // Refused for good (e.g. a label no longer in the schema): the next edit sends
          // the whole frame again, so dropping this snapshot loses no later work.
          this.error = e instanceof Error ? e.message : String(e);
          this.data.entries.shift();
          this.persist();
        }
      }
    } finally {
      this.running = false;
      this.emit();
    }
  }
}
