// Builds ui/dist/ from src/ and public/: one script, one stylesheet, the shell, the
// manifest, icons and the service worker, plus a gzip of each text file (served by the
// box to browsers that accept it). The output is byte-for-byte reproducible: no
// timestamps, no content hashes in names, gzip headers carry no time or name, and
// the service worker's cache key is a digest of the files it caches.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { brotliCompressSync, gzipSync, constants } from 'node:zlib';

const dist = new URL('./dist/', import.meta.url).pathname;
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

await build({
  entryPoints: ['src/main.ts', 'src/trust.ts', 'src/app.css'],
  outdir: dist,
  entryNames: '[name]',
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['chrome100', 'safari15', 'firefox100'],
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'warning',
});
// esbuild names the script after its entry point.
const js = readFileSync(dist + 'main.js');
rmSync(dist + 'main.js');
writeFileSync(dist + 'app.js', js);

for (const name of readdirSync('public')) copyFileSync('public/' + name, dist + name);

// The service worker caches the app shell under a name that changes with its content.
const shell = ['index.html', 'app.js', 'app.css', 'manifest.webmanifest', 'icon.svg', 'icon-192.png'];
const digest = createHash('sha256');
for (const name of shell) digest.update(readFileSync(dist + name));
const sw = readFileSync('src/sw.js', 'utf8')
  .replace('__VERSION__', digest.digest('hex').slice(0, 16))
  .replace('__SHELL__', JSON.stringify(shell.map((n) => (n === 'index.html' ? '/' : '/' + n))));
writeFileSync(dist + 'sw.js', sw);

const text = /\.(html|js|css|webmanifest|svg)$/;
let total = 0;
for (const name of readdirSync(dist).sort()) {
  const body = readFileSync(dist + name);
  if (text.test(name)) {
    const gz = gzipSync(body, { level: constants.Z_BEST_COMPRESSION });
    writeFileSync(dist + name + '.gz', gz);
    // Brotli too: about a sixth smaller than gzip for the script, and browsers ask for it
    // over HTTPS, which is how tablets reach a box.
    const br = brotliCompressSync(body, { params: {
      [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY,
      [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
      [constants.BROTLI_PARAM_SIZE_HINT]: body.length,
    } });
    writeFileSync(dist + name + '.br', br);
    console.log(`${name.padEnd(22)} ${String(body.length).padStart(7)} B  gzip ${String(gz.length).padStart(6)} B  br ${String(br.length).padStart(6)} B`);
  } else {
    console.log(`${name.padEnd(22)} ${String(body.length).padStart(7)} B`);
  }
  total += body.length;
}
