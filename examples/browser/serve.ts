/**
 * The browser side of the project, from Node: bundle a page with esbuild, serve it on
 * 127.0.0.1, and find the system's Chromium. `npm run demo` runs main(): it bundles the
 * demo (examples/browser/page/demo.ts) and serves it at http://127.0.0.1:8080/ (or PORT).
 * The browser tests (test/package/browser.test.ts) use the same functions.
 */
import * as fs from 'fs';
import * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import * as esbuild from 'esbuild';

const ROOT = path.join(__dirname, '..', '..');
/** tfjs-backend-wasm's .wasm binaries: pages call setWasmPaths('/wasm/'). */
export const WASM_DIR = path.join(ROOT, 'node_modules', '@tensorflow', 'tfjs-backend-wasm', 'dist');

export interface BundleResult {
  /** The bundle's size in bytes. */
  bytes: number;
  /** The bytes that come from this library's own files (src/ or the package's dist/). */
  libraryBytes: number;
  /** The library's files in the bundle, relative to src/ or dist/. */
  libraryFiles: string[];
  /** The bytes each of libraryFiles adds to the bundle. */
  libraryFileBytes: Record<string, number>;
  /** esbuild's warnings, as text. */
  warnings: string[];
}

/**
 * Bundles `entry` into `outfile` (ES module, minified, for browsers).
 * @param packageDir Where `import 'tfjs-attention'` resolves: a folder holding a built
 *   `tfjs-attention` package (node_modules/tfjs-attention inside it), or null for src/.
 */
export async function bundle(entry: string, outfile: string, packageDir: string | null = null): Promise<BundleResult> {
  if (packageDir != null) {
    // Resolved from inside this repository, 'tfjs-attention' would name the repository itself
    // (a package may import itself by name), so the entry is bundled from a copy beside the package.
    const copy = path.join(packageDir, 'entries', path.basename(entry));
    fs.mkdirSync(path.dirname(copy), {recursive: true});
    fs.copyFileSync(entry, copy);
    entry = copy;
  }
  const result = await esbuild.build({
    entryPoints: [entry], outfile, bundle: true, minify: true, format: 'esm', platform: 'browser',
    target: 'es2020', metafile: true, logLevel: 'silent',
    ...(packageDir != null
      ? {nodePaths: [path.join(packageDir, 'node_modules'), path.join(ROOT, 'node_modules')]}
      : {alias: {'tfjs-attention': path.join(ROOT, 'src', 'index.ts'),
        'tfjs-attention/train': path.join(ROOT, 'src', 'train', 'index.ts'),
        'tfjs-attention/internals': path.join(ROOT, 'src', 'internals.ts')}}),
  });
  const inputs = Object.values(result.metafile.outputs)[0].inputs;
  const own = Object.entries(inputs).filter(([file]) =>
    (packageDir != null ? /node_modules\/tfjs-attention\/dist\//.test(path.resolve(file)) :
      path.resolve(file).startsWith(path.join(ROOT, 'src') + path.sep)));
  const warnings = await esbuild.formatMessages(result.warnings, {kind: 'warning', color: false});
  return {
    bytes: fs.statSync(outfile).size,
    libraryBytes: own.reduce((n, [, v]) => n + v.bytesInOutput, 0),
    libraryFiles: own.map(([file]) => path.resolve(file).replace(/^.*\/(src|dist)\//, '')),
    libraryFileBytes: Object.fromEntries(own.map(([file, v]) =>
      [path.resolve(file).replace(/^.*\/(src|dist)\//, ''), v.bytesInOutput])),
    warnings,
  };
}

/** Stops esbuild's service process (started by the first bundle), so the caller's process can exit. */
export function stopBundler(): void {
  void esbuild.stop();
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.wasm': 'application/wasm',
  '.css': 'text/css', '.png': 'image/png', '.json': 'application/json',
};

export interface Server {
  url: string;
  close(): Promise<void>;
}

/**
 * Serves files on 127.0.0.1: `routes` maps a URL path ('/', '/app.js') to a file; every
 * URL under /wasm/ is served from WASM_DIR. Anything else is a 404.
 * @param port 0 picks a free port.
 */
export function serve(routes: Record<string, string>, port = 0): Promise<Server> {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const name = url.pathname.startsWith('/wasm/') ? path.basename(url.pathname) : null;
    const file = name != null ? path.join(WASM_DIR, name) : routes[url.pathname];
    if (file == null || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, {'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream'});
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const address = server.address() as {port: number};
      resolve({
        url: `http://127.0.0.1:${address.port}/`,
        close: () => new Promise<void>((done) => {
          server.close(() => done());
          server.closeAllConnections(); // keep-alive sockets of the browser would hold it open
        }),
      });
    });
  });
}

/** The system's Chromium: $CHROME_PATH, else /usr/bin/chromium; null (with the reason) when missing. */
export function findChromium(): {path: string | null; why: string} {
  const candidate = process.env.CHROME_PATH || '/usr/bin/chromium';
  if (fs.existsSync(candidate)) return {path: candidate, why: ''};
  const from = process.env.CHROME_PATH ? 'CHROME_PATH' : 'the default path';
  return {path: null, why: `no Chromium at ${candidate} (${from}); install it with apt-get install -y chromium`};
}

/**
 * Flags for headless Chromium here: SwiftShader for webgl and webgpu, and none of the
 * background connections that a machine without a network refuses.
 */
export const CHROMIUM_ARGS = [
  '--headless=new', '--no-sandbox', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic', '--disable-dev-shm-usage',
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--enable-unsafe-webgpu', '--enable-features=Vulkan',
];

/** An HTML page that loads the module `script`. */
export function pageHtml(title: string, script: string, body = ''): string {
  return `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>${title}</title>` +
    '<meta name="viewport" content="width=device-width, initial-scale=1"></head>' +
    `<body>${body}<script type="module" src="${script}"></script></body></html>\n`;
}

/** Bundles the demo into `dir` (demo.js, index.html) and returns the routes that serve it. */
export async function buildDemo(dir: string,
    packageDir: string | null = null): Promise<{routes: Record<string, string>; bundle: BundleResult}> {
  const here = path.join(__dirname, 'page');
  const result = await bundle(path.join(here, 'demo.ts'), path.join(dir, 'demo.js'), packageDir);
  return {
    routes: {'/': path.join(here, 'index.html'), '/demo.js': path.join(dir, 'demo.js'),
      '/demo.css': path.join(here, 'demo.css')},
    bundle: result,
  };
}

export async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-attention-demo-'));
  const {routes, bundle: b} = await buildDemo(dir);
  const port = Number(process.env.PORT ?? 8080);
  const server = await serve(routes, port);
  console.log(`demo bundle: ${(b.bytes / 1024).toFixed(0)} KB (${(b.libraryBytes / 1024).toFixed(1)} KB of it this library)`);
  console.log(`serving the demo at ${server.url} (Ctrl-C stops)`);
  const stop = () => {
    fs.rmSync(dir, {recursive: true, force: true}); // the bundle this run wrote, nothing else
    void server.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
