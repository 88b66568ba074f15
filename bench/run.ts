// `npm run bench`: loads an upstream through a bare undici TLS proxy (the ceiling) and through the gateway, in one run,
// with autocannon over keep-alive TLS, and prints req/s, p50, p99 and the gateway/bare ratio.
// Rounds alternate (bare, gateway, bare, ...) so drift on a shared machine hits both sides alike; medians are reported.
import 'reflect-metadata';
import autocannon from 'autocannon';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { initDevCertificates } from '../src/tls/ca.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const DURATION_S = Number(process.env['BENCH_DURATION_S'] ?? 8);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 50);

interface Started {
  readonly child: ChildProcess;
  readonly port: number;
}

/** Starts a child process and waits for the first stdout line matching `pick`, which yields the port. */
function startProcess(args: readonly string[], pick: (line: string) => number | undefined): Promise<Started> {
  return new Promise((resolvePort, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error(`timed out starting ${args.join(' ')}`)), 20_000);
    let found = false;
    lines.on('line', (line) => {
      if (found) return;
      const port = pick(line);
      if (port !== undefined) {
        found = true;
        clearTimeout(timer);
        // From here on the child's output is drained unread: parsing its log lines would load the benchmark's own CPU.
        lines.close();
        child.stdout!.resume();
        resolvePort({ child, port });
      }
    });
    child.once('exit', (code) => {
      if (!found) reject(new Error(`${args.join(' ')} exited with ${code}`));
    });
  });
}

const portLine = (line: string): number | undefined => {
  try {
    const parsed = JSON.parse(line) as { port?: unknown; msg?: unknown };
    return typeof parsed.port === 'number' && (parsed.msg === undefined || parsed.msg === 'gatehouse listening') ? parsed.port : undefined;
  } catch {
    return undefined;
  }
};

interface Result {
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly errors: number;
  readonly non2xx: number;
}

async function load(port: number, path: string, tls: { cert: Buffer; key: Buffer }, seconds: number): Promise<Result> {
  const result = await autocannon({
    url: `https://127.0.0.1:${port}${path}`,
    connections: CONNECTIONS,
    duration: seconds,
    headers: { host: 'localhost' },
    tlsOptions: { cert: tls.cert, key: tls.key, servername: 'localhost', ALPNProtocols: ['http/1.1'] },
  });
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors + result.timeouts, non2xx: result.non2xx };
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
};

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'gatehouse-bench-'));
  const children: ChildProcess[] = [];
  try {
    const { paths } = await initDevCertificates(join(work, 'certs'));
    const clientTls = { cert: readFileSync(paths.clientCert), key: readFileSync(paths.clientKey) };

    const upstream = await startProcess([join(HERE, 'upstream.js')], portLine);
    children.push(upstream.child);
    const bare = await startProcess([join(HERE, 'bare-proxy.js'), String(upstream.port), paths.serverCert, paths.serverKey], portLine);
    children.push(bare.child);

    // A realistic protected route: mTLS client certificate, deny-by-default authz, a per-principal quota, the proxy,
    // an audit record per request and an access log line per request.
    const configFile = join(work, 'gatehouse.yaml');
    writeFileSync(
      configFile,
      JSON.stringify({
        server: { host: '127.0.0.1', port: 0 },
        tls: { cert: paths.serverCert, key: paths.serverKey, client_ca: paths.caCert },
        limits: { pre_auth_per_ip: { points: 10_000_000, duration_s: 1 } },
        quotas: { bench: { points: 10_000_000, duration_s: 1 } },
        upstreams: { app: { url: `http://127.0.0.1:${upstream.port}`, connections: 64 } },
        routes: [
          {
            id: 'bench',
            match: { path_prefix: '/bench', methods: ['GET'] },
            authn: ['mtls'],
            authz: { allow: 'authenticated', subjects: ['spiffe://gatehouse.local/dev-client'] },
            quota: 'bench',
            handler: { proxy: { upstream: 'app' } },
          },
        ],
        data_dir: join(work, 'data'),
        log: { level: 'info', access: true },
      }),
    );
    const gateway = await startProcess([join(ROOT, 'dist/src/cli/main.js'), 'serve', '--config', configFile], portLine);
    children.push(gateway.child);

    process.stdout.write(`warming up (${CONNECTIONS} connections, keep-alive TLS, HTTP/1.1)\n`);
    await load(bare.port, '/bench', clientTls, 2);
    await load(gateway.port, '/bench', clientTls, 2);

    const rounds: { bare: Result[]; gateway: Result[] } = { bare: [], gateway: [] };
    for (let round = 1; round <= ROUNDS; round++) {
      rounds.bare.push(await load(bare.port, '/bench', clientTls, DURATION_S));
      rounds.gateway.push(await load(gateway.port, '/bench', clientTls, DURATION_S));
      process.stdout.write(`round ${round}/${ROUNDS}: bare ${Math.round(rounds.bare.at(-1)!.rps)} req/s, gateway ${Math.round(rounds.gateway.at(-1)!.rps)} req/s\n`);
    }

    const row = (name: string, results: readonly Result[]): string => {
      const errors = results.reduce((n, r) => n + r.errors + r.non2xx, 0);
      return `${name.padEnd(28)} ${String(Math.round(median(results.map((r) => r.rps)))).padStart(8)} ${String(median(results.map((r) => r.p50))).padStart(7)} ${String(median(results.map((r) => r.p99))).padStart(7)} ${String(errors).padStart(7)}`;
    };
    process.stdout.write(`\n${'target'.padEnd(28)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'errors'.padStart(7)}\n`);
    process.stdout.write(`${row('bare undici TLS proxy', rounds.bare)}\n`);
    process.stdout.write(`${row('gateway (mTLS route)', rounds.gateway)}\n`);
    const ratio = median(rounds.gateway.map((r) => r.rps)) / median(rounds.bare.map((r) => r.rps));
    process.stdout.write(`ratio gateway/bare: ${ratio.toFixed(2)}\n`);
  } finally {
    for (const child of children) child.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
