// The first-load transfer of any page, measured as bench.mjs measures Obscura's: a cold
// context (no cache, no service worker), every response's encodedDataLength (as served,
// headers included) until the network is idle. For peers in BENCHMARKS.md, e.g. Label
// Studio's login page. Usage: node e2e/first-load.mjs URL
import { firstLoad, launch } from './harness.mjs';

const url = process.argv[2];
if (!url) throw new Error('usage: node e2e/first-load.mjs URL');
const chrome = await launch();
try {
  const { requests, bytes } = await firstLoad(chrome.browser, url);
  console.log(JSON.stringify({ url, requests, kilobytes: Math.round(bytes / 102.4) / 10 }));
} finally {
  await chrome.close();
}
