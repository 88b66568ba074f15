// `npm run bench`: one run, every target its own process and the load generator too (autocannon, keep-alive TLS,
// HTTP/1.1): an upstream loaded through a bare undici TLS proxy (the ceiling), through the gateway (mTLS route, bearer
// route with many tokens), through the stacks a Node user would build instead (express, fastify; same tokens, same
// checks), and through nginx when it is installed; then the gateway without its audit log (the chain's cost), with its
// quotas on Redis, as `serve --workers 2`, balancing over three upstream processes, and `audit query` over a
// million-record log. req/s, p50, p99 and the CPU each target spends per request; the comparisons come last, one line each
// (`ratio gateway/bare [mtls]: 0.87`). Rounds alternate over every target so drift on a shared machine hits all alike;
// medians are reported. bench/README.md says how to read it.
import 'reflect-metadata';
import { Redis } from 'ioredis';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initDevCertificates } from '../src/tls/ca.js';
import { benchAuditQuery } from './audit-query.js';
import { benchGatewayConfig } from './gateway-config.js';
import { portLine, removeWork, runLoad, startProcess, stopAll, type Started } from './children.js';
import type { LoadResult } from './load.js';
import { nginxAvailable, startNginx } from './nginx.js';
import type { PeerSettings } from './peer-checks.js';
import { fetchDpopTokens, fetchJwks, fetchTokens, registerClient, type DpopHolder } from './tokens.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const DURATION_S = Number(process.env['BENCH_DURATION_S'] ?? 8);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 50);
const TOKENS = Number(process.env['BENCH_TOKENS'] ?? 500);
/** DPoP clients, each its own key and token: one per connection. */
const DPOP_HOLDERS = 50;
const WORKERS = Number(process.env['BENCH_WORKERS'] ?? 2);
const IDLE = Number(process.env['BENCH_IDLE_CONNECTIONS'] ?? 10_000);

interface Result {
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly errors: number;
  readonly non2xx: number;
  /** CPU time the target process spent per completed request, in microseconds (Linux /proc; NaN elsewhere). */
  readonly cpuUsPerRequest: number;
}

/** user + system CPU time of one process in microseconds, from /proc/<pid>/stat (USER_HZ is 100 on Linux); NaN if gone. */
function processCpuMicros(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return Number.NaN;
  }
}

/**
 * CPU time of a target in microseconds: the process and its children (nginx's worker, the workers of `serve --workers`),
 * so every target is charged for all the processes serving it.
 */
function cpuMicros(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  let total = processCpuMicros(pid);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) total += processCpuMicros(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return total;
}

/**
 * Loads `path` of a target; with `tokens`, each connection cycles through them, one bearer token per request; with
 * `rate`, at that many requests per second in all. The CPU is the target's: its process and their children.
 */
async function load(
  work: string,
  target: Started,
  path: string,
  tls: { cert: string; key: string },
  seconds: number,
  tokens: readonly string[] = [],
  rate?: number,
  dpop?: readonly DpopHolder[],
): Promise<Result> {
  const pid = target.child.pid;
  const cpuBefore = cpuMicros(pid);
  const result = await runLoad(work, {
    port: target.port,
    path,
    seconds,
    connections: CONNECTIONS,
    cert: tls.cert,
    key: tls.key,
    tokens,
    ...(rate !== undefined ? { rate } : {}),
    // Enough fresh proofs for the fastest target at this duration; each is good once.
    ...(dpop !== undefined ? { dpop: { holders: dpop, proofs: Math.ceil(seconds * 8000) } } : {}),
  });
  return { ...result, cpuUsPerRequest: (cpuMicros(pid) - cpuBefore) / result.total };
}

/** Resident memory of a process in bytes (/proc/<pid>/status VmRSS); NaN if gone. */
function rss(pid: number | undefined): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match === null ? Number.NaN : Number(match[1]) * 1024;
  } catch {
    return Number.NaN;
  }
}

const mib = (bytes: number): number => Math.round(bytes / 1024 / 1024);

/**
 * Opens `count` TLS connections to a target from a process of its own (bench/idle.ts) and keeps them idle for a second:
 * the target's resident memory before and with them, and how fast it completed the full handshakes. Then closes them.
 */
async function idleClients(
  target: Started,
  count: number,
): Promise<{ opened: number; failed: number; handshakesPerSecond: number; rssBefore: number; rssAfter: number }> {
  const rssBefore = rss(target.child.pid);
  const clients = spawn(process.execPath, [join(HERE, 'idle.js'), String(target.port), String(count)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    let output = '';
    clients.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
      const end = output.indexOf('\n');
      if (end >= 0) resolve(output.slice(0, end));
    });
    clients.once('exit', (code) => reject(new Error(`bench/idle.js exited with ${code} before reporting`)));
  });
  const report = JSON.parse(line) as { opened: number; failed: number; handshakesPerSecond: number };
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const rssAfter = rss(target.child.pid);
  const exited = once(clients, 'exit');
  clients.kill('SIGTERM');
  await exited;
  return { ...report, rssBefore, rssAfter };
}

/** Whether a Redis server answers PING at `url` within a second. */
async function redisAnswers(url: string): Promise<boolean> {
  const client = new Redis(url, { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
};

/** One measured target: a process, the path loaded, the tokens sent (bearer routes). */
interface Measured {
  readonly key: string;
  readonly name: string;
  readonly target: Started;
  readonly path: string;
  readonly tokens?: readonly string[];
  /** DPoP routes: the holders whose tokens and fresh proofs the requests carry. */
  readonly dpop?: readonly DpopHolder[];
}

async function main(): Promise<void> {
  let gatewayCpuUs = Number.NaN;
  const comparisons: Array<readonly [string, number]> = [];
  const work = mkdtempSync(join(tmpdir(), 'gatehouse-bench-'));
  const children: ChildProcess[] = [];
  try {
    const { paths } = await initDevCertificates(join(work, 'certs'));

    const upstream = await startProcess([join(HERE, 'upstream.js')], portLine);
    children.push(upstream.child);
    const bare = await startProcess([join(HERE, 'bare-proxy.js'), String(upstream.port), paths.serverCert, paths.serverKey], portLine);
    children.push(bare.child);

    const configFile = join(work, 'gatehouse.yaml');
    writeFileSync(configFile, JSON.stringify(benchGatewayConfig(paths, upstream.port, join(work, 'data'))));
    const client = await registerClient(join(work, 'data', 'gatehouse.db'));
    const gateway = await startProcess([join(ROOT, 'dist/src/cli/main.js'), 'serve', '--config', configFile], portLine);
    children.push(gateway.child);
    // What the chained, group-committed log costs: one launcher, the same config, with the log and with it discarded
    // (the audited one writes its own chain, so the two never share a lock).
    const variantConfig = join(work, 'variant.yaml');
    writeFileSync(variantConfig, JSON.stringify({ ...JSON.parse(readFileSync(configFile, 'utf8')), audit: { instance: 'bench-variant' } }));
    const unaudited = await startProcess([join(HERE, 'gateway-audit-variants.js'), variantConfig], portLine);
    children.push(unaudited.child);
    const audited = await startProcess([join(HERE, 'gateway-audit-variants.js'), variantConfig, '--audit'], portLine);
    children.push(audited.child);
    // The same gateway with its quota and pre-auth budget counted in Redis (skipped when no Redis answers).
    const redisUrl = process.env['GATEHOUSE_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
    let onRedis: Started | undefined;
    if (await redisAnswers(redisUrl)) {
      const redisConfig = join(work, 'redis.yaml');
      const shared = { url: redisUrl, key_prefix: `gatehouse-bench-${process.pid}-${Date.now()}` };
      writeFileSync(redisConfig, JSON.stringify({ ...JSON.parse(readFileSync(configFile, 'utf8')), redis: shared, audit: { instance: 'bench-redis' } }));
      onRedis = await startProcess([join(ROOT, 'dist/src/cli/main.js'), 'serve', '--config', redisConfig], portLine);
      children.push(onRedis.child);
    } else process.stdout.write(`no Redis answers at ${redisUrl}: the Redis-backed quota variant is skipped\n`);
    // Resilient upstreams: the same gateway balancing over three upstream processes (round robin, passive and active health).
    const more = [await startProcess([join(HERE, 'upstream.js')], portLine), await startProcess([join(HERE, 'upstream.js')], portLine)];
    children.push(...more.map((started) => started.child));
    const targetsConfig = join(work, 'targets.yaml');
    const base = JSON.parse(readFileSync(configFile, 'utf8')) as { upstreams: { app: Record<string, unknown> } };
    const { url: _one, ...appSettings } = base.upstreams.app;
    const targets = [upstream.port, ...more.map((started) => started.port)].map((port) => ({ url: `http://127.0.0.1:${port}` }));
    writeFileSync(targetsConfig, JSON.stringify({ ...base, upstreams: { app: { ...appSettings, targets } }, audit: { instance: 'bench-targets' } }));
    const threeTargets = await startProcess([join(ROOT, 'dist/src/cli/main.js'), 'serve', '--config', targetsConfig], portLine);
    children.push(threeTargets.child);
    // All cores: the same gateway as a primary and two workers (limits counted by the primary, each worker its own chain).
    const workersConfig = join(work, 'workers.yaml');
    // The admin listener (metrics) runs with one worker only: the workers variant goes without it.
    const { admin: _admin, ...single } = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
    writeFileSync(workersConfig, JSON.stringify({ ...single, audit: { instance: 'bench-workers' } }));
    const workers = await startProcess([join(ROOT, 'dist/src/cli/main.js'), 'serve', '--config', workersConfig, '--workers', String(WORKERS)], portLine);
    children.push(workers.child);
    // Many distinct tokens, as real traffic has: each is verified once, then served from the verified-token cache.
    const tokens = await fetchTokens(gateway.port, paths.caCert, client, TOKENS);
    process.stdout.write(`fetched ${tokens.length} access tokens from the token endpoint\n`);
    const dpop = await fetchDpopTokens(gateway.port, paths.caCert, client, DPOP_HOLDERS);
    process.stdout.write(`fetched ${dpop.length} DPoP-bound tokens, one per key\n`);

    // The stacks a Node user would build instead, on the bearer route with the same tokens and the same checks.
    const claims = JSON.parse(Buffer.from(tokens[0]?.split('.')[1] ?? '', 'base64url').toString('utf8')) as { iss: string; aud: string | string[] };
    const peerSettings: PeerSettings = {
      upstreamPort: upstream.port,
      cert: paths.serverCert,
      key: paths.serverKey,
      jwks: await fetchJwks(gateway.port, paths.caCert),
      issuer: claims.iss,
      audience: Array.isArray(claims.aud) ? (claims.aud[0] ?? '') : claims.aud,
      scope: 'bench:read',
    };
    const peerFile = join(work, 'peers.json');
    writeFileSync(peerFile, JSON.stringify(peerSettings));
    const express = await startProcess([join(HERE, 'express-stack.js'), peerFile], portLine);
    children.push(express.child);
    const fastify = await startProcess([join(HERE, 'fastify-stack.js'), peerFile], portLine);
    children.push(fastify.child);
    let nginx: Started | undefined;
    if (nginxAvailable()) {
      const nginxDir = join(work, 'nginx');
      mkdirSync(nginxDir);
      nginx = await startNginx(nginxDir, paths, upstream.port);
      children.push(nginx.child);
    } else process.stdout.write('nginx is not on PATH (apt-get install nginx to include it): the nginx comparison is skipped\n');

    // Each measured target: the bearer ones get the very same requests (tokens included, ignored by the bare proxy and
    // nginx), so the load generator's work and the request size weigh on every side alike.
    const measured: Measured[] = [
      { key: 'bare', name: 'bare undici TLS proxy', target: bare, path: '/bench' },
      { key: 'gateway', name: 'gateway (mTLS route)', target: gateway, path: '/bench' },
      { key: 'bareTokens', name: 'bare, same requests w/ tokens', target: bare, path: '/jwt', tokens },
      { key: 'bearer', name: `gateway (bearer, ${tokens.length} tokens)`, target: gateway, path: '/jwt', tokens },
      { key: 'bareDpop', name: 'bare, same requests w/ DPoP', target: bare, path: '/dpop', dpop },
      { key: 'dpop', name: `gateway (DPoP, ${dpop.length} keys)`, target: gateway, path: '/dpop', dpop },
      { key: 'express', name: 'express 5 stack (bearer)', target: express, path: '/jwt', tokens },
      { key: 'fastify', name: 'fastify 5 stack (bearer)', target: fastify, path: '/jwt', tokens },
      ...(nginx !== undefined ? [{ key: 'nginx', name: 'nginx, 1 worker (mTLS)', target: nginx, path: '/bench' }] : []),
      { key: 'unaudited', name: 'variant (mTLS), audit discarded', target: unaudited, path: '/bench' },
      { key: 'audited', name: 'variant (mTLS), audit chained', target: audited, path: '/bench' },
      ...(onRedis !== undefined ? [{ key: 'redis', name: 'gateway (mTLS), quotas on Redis', target: onRedis, path: '/bench' }] : []),
      { key: 'workers', name: `gateway (mTLS), ${WORKERS} workers`, target: workers, path: '/bench' },
      { key: 'targets', name: 'gateway (mTLS), 3 targets', target: threeTargets, path: '/bench' },
    ];
    const tls = { cert: readFileSync(paths.clientCert, 'utf8'), key: readFileSync(paths.clientKey, 'utf8') };
    const run = (m: Measured, seconds: number): Promise<Result> => load(work, m.target, m.path, tls, seconds, m.tokens, undefined, m.dpop);

    process.stdout.write(`warming up (${CONNECTIONS} connections, keep-alive TLS, HTTP/1.1, the load generator in its own process)\n`);
    for (const m of measured) await run(m, 2);
    // Rounds alternate over every target so drift on a shared machine hits all alike; medians are reported.
    const results = new Map<string, Result[]>(measured.map((m) => [m.key, []]));
    for (let round = 1; round <= ROUNDS; round++) {
      // Each round starts at another target, so no target always runs first or last in a round.
      const start = Math.floor(((round - 1) * measured.length) / ROUNDS);
      for (const m of [...measured.slice(start), ...measured.slice(0, start)]) results.get(m.key)?.push(await run(m, DURATION_S));
      const last = (key: string): number => Math.round(results.get(key)?.at(-1)?.rps ?? 0);
      process.stdout.write(
        `round ${round}/${ROUNDS}: bare ${last('bare')}, gateway mTLS ${last('gateway')}, bare with tokens ${last('bareTokens')}, ` +
          `gateway bearer ${last('bearer')}, gateway DPoP ${last('dpop')}, express ${last('express')}, fastify ${last('fastify')} req/s\n`,
      );
    }

    const of = (key: string): readonly Result[] => results.get(key) ?? [];
    const cpu = (key: string): number => median(of(key).map((r) => r.cpuUsPerRequest));
    const rps = (key: string): number => median(of(key).map((r) => r.rps));
    gatewayCpuUs = cpu('gateway');
    process.stdout.write(
      `\n${'target'.padEnd(32)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'errors'.padStart(7)} ${'CPU µs/req'.padStart(11)}\n`,
    );
    for (const m of measured) {
      const all = of(m.key);
      const errors = all.reduce((n, r) => n + r.errors + r.non2xx, 0);
      const cells = [rps(m.key), median(all.map((r) => r.p50)), median(all.map((r) => r.p99)), errors, cpu(m.key)];
      process.stdout.write(`${m.name.padEnd(32)} ${cells.map((cell, i) => String(Math.round(cell)).padStart(i === 0 ? 8 : i === 4 ? 11 : 7)).join(' ')}\n`);
    }
    // The load generator and the upstream share this machine's cores with the proxy under test, so req/s understates a
    // proxy that needs more CPU; the CPU each proxy process spends per request is the direct measure of its own cost.
    process.stdout.write(
      `\nCPU per request bare/gateway, mTLS route: ${(cpu('bare') / cpu('gateway')).toFixed(2)}, bearer route: ${(cpu('bareTokens') / cpu('bearer')).toFixed(2)}, ` +
        `DPoP route: ${(cpu('bareDpop') / cpu('dpop')).toFixed(2)}\n`,
    );
    // The audit log's price: the same launcher and config, with the chained, group-committed log and with it discarded.
    process.stdout.write(
      `audit chain cost, mTLS route: throughput with/without ${(rps('audited') / rps('unaudited')).toFixed(2)}, ` +
        `CPU per request without/with ${(cpu('unaudited') / cpu('audited')).toFixed(2)}\n`,
    );
    if (onRedis !== undefined) {
      // What sharing the limits costs: the same gateway with its route quota and pre-auth budget counted in Redis.
      process.stdout.write(
        `quotas on Redis / in memory, mTLS route: throughput ${(rps('redis') / rps('gateway')).toFixed(2)}, CPU per request ${(cpu('gateway') / cpu('redis')).toFixed(2)}\n`,
      );
    }
    // Balancing over three targets against the bare proxy with one: the price of the balancer and the health state.
    process.stdout.write(
      `ratio gateway with 3 targets / bare with 1, mTLS route: ${(rps('targets') / rps('bare')).toFixed(2)} (gateway with 1 target: ${(rps('gateway') / rps('bare')).toFixed(2)})\n`,
    );
    // All cores: with the load generator on the same machine, the workers share its cores with it and with the upstream.
    process.stdout.write(
      `${WORKERS} workers / 1 process, mTLS route (limits counted by the primary): throughput ${(rps('workers') / rps('gateway')).toFixed(2)} ` +
        `(${availableParallelism()} cores, the load generator and the upstream on the same machine)\n`,
    );
    // Latency when neither side is saturated: both at half the gateway's throughput, the same requests.
    const half = Math.max(100, Math.round(rps('gateway') / 2));
    const [bareHalf, gatewayHalf] = [
      await load(work, bare, '/bench', tls, DURATION_S, [], half),
      await load(work, gateway, '/bench', tls, DURATION_S, [], half),
    ];
    process.stdout.write(
      `gateway-added latency at 50 % of its saturation (${half} req/s), mTLS route: p50 ${(gatewayHalf.p50 - bareHalf.p50).toFixed(1)} ms, ` +
        `p99 ${(gatewayHalf.p99 - bareHalf.p99).toFixed(1)} ms (gateway p50/p99 ${gatewayHalf.p50}/${gatewayHalf.p99} ms, bare ${bareHalf.p50}/${bareHalf.p99} ms)\n`,
    );
    // Protection: the health probe while the token endpoint is flooded with wrong client secrets (argon2 runs on the thread
    // pool, bounded; it must never starve the event loop that answers everything else).
    const probe = (seconds: number): Promise<LoadResult> =>
      runLoad(work, { port: gateway.port, path: '/healthz', seconds, connections: 2, rate: 100, cert: tls.cert, key: tls.key, tokens: [] });
    const quiet = await probe(DURATION_S);
    const wrong = `Basic ${Buffer.from(`${client.id}:not-the-secret`).toString('base64')}`;
    const [flooded, flood] = await Promise.all([
      probe(DURATION_S),
      runLoad(work, {
        port: gateway.port,
        path: '/oauth2/token',
        seconds: DURATION_S,
        connections: 20,
        method: 'POST',
        body: 'grant_type=client_credentials',
        headers: { authorization: wrong, 'content-type': 'application/x-www-form-urlencoded' },
        cert: tls.cert,
        key: tls.key,
        tokens: [],
      }),
    ]);
    process.stdout.write(
      `/healthz while the token endpoint is flooded with wrong secrets: p50/p99 ${flooded.p50}/${flooded.p99} ms (unflooded ${quiet.p50}/${quiet.p99} ms); ` +
        `the flood got ${Math.round(flood.rps)} answers/s, ${flood.non2xx} of ${flood.total} refused\n`,
    );
    // Scale: memory with many idle TLS clients, and full handshakes per second, gateway against the bare Node TLS server.
    const idleBare = await idleClients(bare, IDLE);
    const idleGateway = await idleClients(gateway, IDLE);
    process.stdout.write(
      `gateway RSS with ${idleGateway.opened} idle TLS connections: ${mib(idleGateway.rssAfter)} MiB (${mib(idleGateway.rssBefore)} MiB before, ` +
        `${Math.round((idleGateway.rssAfter - idleGateway.rssBefore) / 1024 / Math.max(1, idleGateway.opened))} KiB each; bare proxy ` +
        `${mib(idleBare.rssAfter)} MiB with ${idleBare.opened}); full handshakes/s gateway/bare: ${Math.round(idleGateway.handshakesPerSecond)}/` +
        `${Math.round(idleBare.handshakesPerSecond)} = ${(idleGateway.handshakesPerSecond / idleBare.handshakesPerSecond).toFixed(2)}` +
        `${idleGateway.failed + idleBare.failed > 0 ? ` (${idleGateway.failed} + ${idleBare.failed} connections failed)` : ''}\n`,
    );
    // The comparisons, last, one per line in one form.
    comparisons.push(
      ['gateway/bare [mtls]', rps('gateway') / rps('bare')],
      ['gateway/bare [bearer]', rps('bearer') / rps('bareTokens')],
      ['gateway/bare [dpop]', rps('dpop') / rps('bareDpop')],
      ['gateway/express [bearer]', rps('bearer') / rps('express')],
      ['gateway/fastify [bearer]', rps('bearer') / rps('fastify')],
      ...(nginx !== undefined ? [['gateway/nginx [mtls]', rps('gateway') / rps('nginx')] as const] : []),
    );
  } finally {
    await stopAll(children);
    removeWork(work);
  }
  await benchAuditQuery(gatewayCpuUs);
  process.stdout.write('\n');
  for (const [name, ratio] of comparisons) process.stdout.write(`ratio ${name}: ${ratio.toFixed(2)}\n`);
}

await main();
