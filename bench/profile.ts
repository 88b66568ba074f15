// `node dist/bench/profile.js [mtls|bearer|bare] [SECONDS]`: one `gatehouse serve` under load on the mTLS route (default)
// or on the bearer route with 500 distinct tokens — or the bare proxy (`bare`) under the mTLS load — run with
// `node --cpu-prof`, and the functions that took its CPU, by self time (and by source file). PROFILE_OUT=FILE keeps the
// raw profile (Chrome DevTools, speedscope). Where the gateway's time goes, for the work of issue #13; not a measurement of
// speed (the profiler itself slows the process).
import 'reflect-metadata';
import autocannon from 'autocannon';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initDevCertificates } from '../src/tls/ca.js';
import { benchGatewayConfig } from './gateway-config.js';
import { portLine, removeWork, startProcess, stopAll } from './children.js';
import { fetchTokens, registerClient } from './tokens.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const MODES = ['mtls', 'bearer', 'bare'] as const;
const MODE = MODES.find((mode) => mode === process.argv[2]) ?? 'mtls';
const SECONDS = Number((process.argv[2] === MODE ? process.argv[3] : process.argv[2]) ?? 10);
if (!Number.isFinite(SECONDS) || SECONDS <= 0) throw new Error('usage: bench:profile [mtls|bearer|bare] [SECONDS]');

interface Node {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
}
interface Profile {
  readonly nodes: readonly Node[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Self time per function and per file, in ms, from a V8 CPU profile. */
function summarize(profile: Profile): void {
  const byNode = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map<string, number>();
  const files = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byNode.get(profile.samples[i] as number);
    const dt = (profile.timeDeltas[i] ?? 0) / 1000;
    if (node === undefined) continue;
    total += dt;
    const { functionName, url, lineNumber } = node.callFrame;
    const file = url.replace(/^file:\/\//, '').replace(`${ROOT}/`, '') || '(native)';
    const name = `${functionName || '(anonymous)'} ${file}:${lineNumber + 1}`;
    self.set(name, (self.get(name) ?? 0) + dt);
    files.set(file, (files.get(file) ?? 0) + dt);
  }
  const top = (map: Map<string, number>, n: number): string =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, ms]) => `${((100 * ms) / total).toFixed(1).padStart(5)} %  ${ms.toFixed(0).padStart(6)} ms  ${name}`)
      .join('\n');
  process.stdout.write(`\nself time by function (of ${total.toFixed(0)} ms sampled)\n${top(self, 45)}\n\nby file\n${top(files, 30)}\n`);
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'gatehouse-profile-'));
  const children: ChildProcess[] = [];
  try {
    const { paths } = await initDevCertificates(join(work, 'certs'));
    const upstream = await startProcess([join(HERE, 'upstream.js')], portLine);
    children.push(upstream.child);
    const config = join(work, 'gatehouse.yaml');
    writeFileSync(config, JSON.stringify(benchGatewayConfig(paths, upstream.port, join(work, 'data'))));
    const client = await registerClient(join(work, 'data', 'gatehouse.db'));
    const profiles = join(work, 'profiles');
    // `bare`: the bare proxy under the same load, to tell Node's own TLS and HTTP work from the gateway's.
    const target =
      MODE === 'bare'
        ? [join(HERE, 'bare-proxy.js'), String(upstream.port), paths.serverCert, paths.serverKey]
        : [join(ROOT, 'dist/src/cli/main.js'), 'serve', '--config', config];
    const gateway = await startProcess(['--cpu-prof', `--cpu-prof-dir=${profiles}`, ...target], portLine);
    children.push(gateway.child);
    const tokens = MODE === 'bearer' ? await fetchTokens(gateway.port, paths.caCert, client, 500) : [];
    const result = await autocannon({
      url: `https://127.0.0.1:${gateway.port}${MODE === 'bearer' ? '/jwt' : '/bench'}`,
      ...(tokens.length > 0 ? { requests: tokens.map((token) => ({ headers: { host: 'localhost', authorization: `Bearer ${token}` } })) } : {}),
      connections: 50,
      duration: SECONDS,
      headers: { host: 'localhost' },
      tlsOptions: { cert: readFileSync(paths.clientCert), key: readFileSync(paths.clientKey), servername: 'localhost', ALPNProtocols: ['http/1.1'] },
    });
    process.stdout.write(
      `${MODE} route: ${result.requests.total} requests, ${Math.round(result.requests.average)} req/s under the profiler, ${result.non2xx} non-2xx\n`,
    );
    await stopAll([gateway.child]);
    const file = readdirSync(profiles).find((name) => name.endsWith('.cpuprofile'));
    if (file === undefined) throw new Error('no profile was written');
    const text = readFileSync(join(profiles, file), 'utf8');
    // PROFILE_OUT keeps the raw profile (Chrome DevTools and speedscope open it).
    const out = process.env['PROFILE_OUT'];
    if (out !== undefined && out !== '') writeFileSync(out, text);
    summarize(JSON.parse(text) as Profile);
  } finally {
    await stopAll(children);
    removeWork(work);
  }
}

await main();
