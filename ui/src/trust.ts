// The "Trust this box" page (/trust, outside the app so the app's first load does not
// carry it): the box's root certificate's name and fingerprint, and whether this
// browser trusts the box already. Browsers register a service worker only over HTTPS
// they trust (or on localhost), so a registration that succeeds says so.

const $ = (id: string) => document.getElementById(id)!;

fetch('/api/v1/trust', { headers: { Accept: 'application/json' } })
  .then(async (r) => {
    const t = await r.json();
    if (!r.ok) throw new Error(t.message ?? r.statusText);
    $('root-name').textContent = t.name;
    $('root-fingerprint').textContent = t.fingerprint;
  })
  .catch((e: Error) => { $('root-fingerprint').textContent = e.message; });

const state = $('trust-state');
const trusted = location.protocol === 'https:' && 'serviceWorker' in navigator;
(trusted ? navigator.serviceWorker.register('/sw.js', { scope: '/' }) : Promise.reject(new Error('not over HTTPS')))
  .then(() => {
    state.textContent = 'This browser trusts the box: the app works offline here.';
    state.dataset.trusted = 'yes';
  }, () => {
    state.textContent = 'This browser does not trust the box yet: follow the steps for this device, then reload.';
    state.dataset.trusted = 'no';
  });
