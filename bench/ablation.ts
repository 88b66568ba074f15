// `npm run bench:ablation [-- SECONDS ROUNDS]`: where the gateway's CPU per request goes, by taking parts away. The same
// mTLS load (bench/load.ts, its own process) against the bare proxy and gateways that differ in one thing each, in
// alternating rounds; for each, CPU per request split into the main thread (the event loop: TLS, HTTP, the pipeline) and
// the process's other threads (V8's garbage-collection and compiler helpers, the libuv pool: log writes). Benchmark
// only: the variants drop checks on purpose, to price them, and never exist outside this file.
import 'reflect-metadata';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initDevCertificates } from '../src/tls/ca.js';
import { portLine, removeWork, runLoad, startProcess, stopAll, type Started } from './children.js';
import { benchGatewayConfig } from './gateway-config.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const SECONDS = Number(process.argv[2] ?? 6);
const ROUNDS = Number(process.argv[3] ?? 3);
if (!(SECONDS > 0 && Number.isInteger(ROUNDS) && ROUNDS > 0)) throw new Error('usage: bench:ablation [SECONDS] [ROUNDS]');

type GatewayConfig = ReturnType<typeof benchGatewayConfig> & { log: { access: boolean }; admin?: unknown; routes: Array<Record<string, unknown>> };

interface Variant {
  readonly name: string;
  readonly what: string;
  /** Changes the bench gateway's config; undefined: the bare proxy. */
  readonly patch?: (config: GatewayConfig) => void;
  /**
   * `serve`: the real `gatehouse serve`. Otherwise started through bench/gateway-audit-variants.ts (one process, the same
   * logger), with the real audit chain or, `discard`, a sink that keeps nothing: those variants differ in nothing else.
   */
  readonly launch?: 'serve' | 'chain' | 'discard';
}

/** The mTLS route's checks taken away: no client certificate, anyone allowed, no quota. */
function openRoute(config: GatewayConfig): void {
  const route = config.routes.find((candidate) => candidate['id'] === 'bench');
  if (route === undefined) throw new Error('the bench config has no "bench" route');
  route['authn'] = ['none'];
  route['authz'] = { allow: 'anyone' };
  delete route['quota'];
}
const noAccessLog = (config: GatewayConfig): void => {
  config.log.access = false;
};
const noMetrics = (config: GatewayConfig): void => {
  delete config.admin;
};
/** The route opened, no access log, no metrics: the gateway's own frame around the proxy. */
const skeleton = (config: GatewayConfig): void => {
  openRoute(config);
  noAccessLog(config);
  noMetrics(config);
};

const VARIANTS: readonly Variant[] = [
  { name: 'bare', what: 'bare undici TLS proxy' },
  { name: 'serve', what: 'gatehouse serve, mTLS route, everything on', patch: () => undefined, launch: 'serve' },
  { name: 'full', what: 'the same gateway from the bench launcher', patch: () => undefined, launch: 'chain' },
  { name: 'no-access-log', what: '… without the access log', patch: noAccessLog, launch: 'chain' },
  { name: 'no-metrics', what: '… without metrics', patch: noMetrics, launch: 'chain' },
  { name: 'no-audit', what: '… with an audit sink that keeps nothing', patch: () => undefined, launch: 'discard' },
  { name: 'open-route', what: '… no client certificate, authz or quota', patch: openRoute, launch: 'chain' },
  {
    name: 'skeleton+audit',
    what: 'open route, no log, no metrics, audit on',
    patch: skeleton,
    launch: 'chain',
  },
  { name: 'skeleton', what: '… and the audit sink keeps nothing', patch: skeleton, launch: 'discard' },
];

/** CPU time in microseconds of each thread of a process: the main thread, and all the others together. */
function threadCpu(pid: number): { main: number; other: number } {
  let main = 0;
  let other = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${task}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const micros = (Number(fields[11]) + Number(fields[12])) * 10_000;
      if (task === String(pid)) main += micros;
      else other += micros;
    } catch {
      // A thread that ended meanwhile.
    }
  }
  return { main, other };
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? Number.NaN) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
};

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'gatehouse-ablation-'));
  const children: Started[] = [];
  try {
    const { paths } = await initDevCertificates(join(work, 'certs'));
    const upstream = await startProcess([join(HERE, 'upstream.js')], portLine);
    children.push(upstream);
    const targets = new Map<string, Started>();
    const only = process.env['ABLATION_ONLY']?.split(',');
    const variants = only === undefined ? VARIANTS : VARIANTS.filter((variant) => only.includes(variant.name));
    for (const variant of variants) {
      let args: string[];
      if (variant.patch === undefined) args = [join(HERE, 'bare-proxy.js'), String(upstream.port), paths.serverCert, paths.serverKey];
      else {
        const config = benchGatewayConfig(paths, upstream.port, join(work, variant.name)) as GatewayConfig;
        variant.patch(config);
        const file = join(work, `${variant.name}.json`);
        writeFileSync(file, JSON.stringify(config));
        if (variant.launch === 'serve') args = [join(ROOT, 'dist/src/cli/main.js'), 'serve', '--config', file];
        else args = [join(HERE, 'gateway-audit-variants.js'), file, ...(variant.launch === 'chain' ? ['--audit'] : [])];
      }
      // ABLATION_NODE_ARGS: node flags for the gateways (e.g. `--cpu-prof --cpu-prof-dir=DIR`: a profile per variant).
      const nodeArgs = variant.patch === undefined ? [] : (process.env['ABLATION_NODE_ARGS']?.split(' ').filter((arg) => arg !== '') ?? []);
      const started = await startProcess([...nodeArgs, ...args], portLine);
      children.push(started);
      targets.set(variant.name, started);
    }
    const tls = { cert: readFileSync(paths.clientCert, 'utf8'), key: readFileSync(paths.clientKey, 'utf8') };
    // A warm-up round first (compilation, pools, caches), not counted.
    const measured = new Map<string, Array<{ rps: number; main: number; other: number }>>();
    for (let round = 0; round <= ROUNDS; round++) {
      // Each round starts at another variant, so drift on a shared machine hits all alike.
      for (let i = 0; i < variants.length; i++) {
        const variant = variants[(i + round) % variants.length] as Variant;
        const target = targets.get(variant.name) as Started;
        const pid = target.child.pid as number;
        const before = threadCpu(pid);
        const result = await runLoad(work, {
          port: target.port,
          path: '/bench/x',
          seconds: round === 0 ? 2 : SECONDS,
          connections: 50,
          ...tls,
          tokens: [],
        });
        const after = threadCpu(pid);
        if (round === 0) continue;
        if (result.total === 0 || result.non2xx > 0) throw new Error(`${variant.name}: ${result.total} requests, ${result.non2xx} not 2xx`);
        const rows = measured.get(variant.name) ?? [];
        rows.push({ rps: result.rps, main: (after.main - before.main) / result.total, other: (after.other - before.other) / result.total });
        measured.set(variant.name, rows);
      }
    }
    process.stdout.write(`\n${'variant'.padEnd(15)} ${'req/s'.padStart(6)} ${'main µs'.padStart(8)} ${'other µs'.padStart(9)}  what\n`);
    for (const variant of variants) {
      const rows = measured.get(variant.name) ?? [];
      const rps = median(rows.map((row) => row.rps));
      const mainUs = median(rows.map((row) => row.main));
      const otherUs = median(rows.map((row) => row.other));
      process.stdout.write(
        `${variant.name.padEnd(15)} ${rps.toFixed(0).padStart(6)} ${mainUs.toFixed(1).padStart(8)} ${otherUs.toFixed(1).padStart(9)}  ${variant.what}\n`,
      );
    }
    process.stdout.write(`\n(${ROUNDS} rounds of ${SECONDS} s after a warm-up round, medians; CPU per completed request, from /proc)\n`);
  } finally {
    await stopAll(children.map((started) => started.child));
    removeWork(work);
  }
}

await main();
