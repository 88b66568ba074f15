// `npm run bench`: loads an upstream through a bare undici TLS proxy (the ceiling) and through the gateway, in one run,
// with autocannon over keep-alive TLS, and prints req/s, p50, p99 and the gateway/bare ratio; then the gateway without
// its audit log (the chain's cost), the gateway with its quotas on Redis (what sharing the limits costs), the gateway as
// `serve --workers 2` (what all cores give), the gateway balancing over three upstream processes, and `audit query`
// over a million-record log.
// Rounds alternate (bare, gateway, bare, ...) so drift on a shared machine hits both sides alike; medians are reported.
import 'reflect-metadata';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initDevCertificates } from '../src/tls/ca.js';
import { benchAuditQuery } from './audit-query.js';
import { benchGatewayConfig } from './gateway-config.js';
import { portLine, removeWork, startProcess, stopAll, type Started } from './children.js';
import { fetchTokens, registerClient } from './tokens.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const DURATION_S = Number(process.env['BENCH_DURATION_S'] ?? 8);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 50);
const TOKENS = Number(process.env['BENCH_TOKENS'] ?? 500);
const WORKERS = Number(process.env['BENCH_WORKERS'] ?? 2);

interface Result {
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly errors: number;
  readonly non2xx: number;
  /** CPU time the target process spent per completed request, in microseconds (Linux /proc; NaN elsewhere). */
  readonly cpuUsPerRequest: number;
}

/** user + system CPU time of a process in microseconds, from /proc/<pid>/stat (USER_HZ is 100 on Linux). */
function cpuMicros(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return Number.NaN;
  }
}

/**
 * Loads `path`; with `tokens`, each connection cycles through them, one bearer token per request. The CPU is the target
 * process's own: for `serve --workers N` (`cpu: false`) it would be the primary's alone, so none is reported.
 */
async function load(
  target: Started,
  path: string,
  tls: { cert: Buffer; key: Buffer },
  seconds: number,
  tokens: readonly string[] = [],
  cpu = true,
): Promise<Result> {
  const { port } = target;
  const pid = cpu ? target.child.pid : undefined;
  const cpuBefore = cpuMicros(pid);
  const result = await autocannon({
    url: `https://127.0.0.1:${port}${path}`,
    connections: CONNECTIONS,
    duration: seconds,
    headers: { host: 'localhost' },
    tlsOptions: { cert: tls.cert, key: tls.key, servername: 'localhost', ALPNProtocols: ['http/1.1'] },
    // Static requests are serialized once by autocannon, so cycling through tokens costs the load generator nothing extra.
    ...(tokens.length > 0 ? { requests: tokens.map((token) => ({ headers: { host: 'localhost', authorization: `Bearer ${token}` } })) } : {}),
  });
  // A target that answered nothing (crashed, stalled) must not turn into a ratio of Infinity or 0.
  if (result.requests.total === 0)
    throw new Error(`no request to 127.0.0.1:${port}${path} completed in ${seconds} s (${result.errors} errors, ${result.timeouts} timeouts)`);
  const cpuUsPerRequest = (cpuMicros(pid) - cpuBefore) / result.requests.total;
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    cpuUsPerRequest,
  };
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

async function main(): Promise<void> {
  let gatewayCpuUs = Number.NaN;
  const work = mkdtempSync(join(tmpdir(), 'gatehouse-bench-'));
  const children: ChildProcess[] = [];
  try {
    const { paths } = await initDevCertificates(join(work, 'certs'));
    const clientTls = { cert: readFileSync(paths.clientCert), key: readFileSync(paths.clientKey) };

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
    writeFileSync(workersConfig, JSON.stringify({ ...JSON.parse(readFileSync(configFile, 'utf8')), audit: { instance: 'bench-workers' } }));
    const workers = await startProcess([join(ROOT, 'dist/src/cli/main.js'), 'serve', '--config', workersConfig, '--workers', String(WORKERS)], portLine);
    children.push(workers.child);
    // Many distinct tokens, as real traffic has: each is verified once, then served from the verified-token cache.
    const tokens = await fetchTokens(gateway.port, paths.caCert, client, TOKENS);
    process.stdout.write(`fetched ${tokens.length} access tokens from the token endpoint\n`);

    process.stdout.write(`warming up (${CONNECTIONS} connections, keep-alive TLS, HTTP/1.1)\n`);
    await load(bare, '/bench', clientTls, 2);
    await load(gateway, '/bench', clientTls, 2);
    await load(gateway, '/jwt', clientTls, 2, tokens);
    await load(unaudited, '/bench', clientTls, 2);
    await load(audited, '/bench', clientTls, 2);
    if (onRedis !== undefined) await load(onRedis, '/bench', clientTls, 2);
    await load(workers, '/bench', clientTls, 2, [], false);
    await load(threeTargets, '/bench', clientTls, 2);

    // The bearer comparison sends the bare proxy the very same requests (tokens included, ignored there), so the load
    // generator's own per-request work and the larger request headers weigh on both sides alike.
    const rounds: {
      bare: Result[];
      gateway: Result[];
      bareTokens: Result[];
      bearer: Result[];
      unaudited: Result[];
      audited: Result[];
      redis: Result[];
      workers: Result[];
      targets: Result[];
    } = { bare: [], gateway: [], bareTokens: [], bearer: [], unaudited: [], audited: [], redis: [], workers: [], targets: [] };
    for (let round = 1; round <= ROUNDS; round++) {
      rounds.bare.push(await load(bare, '/bench', clientTls, DURATION_S));
      rounds.gateway.push(await load(gateway, '/bench', clientTls, DURATION_S));
      rounds.bareTokens.push(await load(bare, '/jwt', clientTls, DURATION_S, tokens));
      rounds.bearer.push(await load(gateway, '/jwt', clientTls, DURATION_S, tokens));
      rounds.unaudited.push(await load(unaudited, '/bench', clientTls, DURATION_S));
      rounds.audited.push(await load(audited, '/bench', clientTls, DURATION_S));
      if (onRedis !== undefined) rounds.redis.push(await load(onRedis, '/bench', clientTls, DURATION_S));
      rounds.workers.push(await load(workers, '/bench', clientTls, DURATION_S, [], false));
      rounds.targets.push(await load(threeTargets, '/bench', clientTls, DURATION_S));
      process.stdout.write(
        `round ${round}/${ROUNDS}: bare ${Math.round(rounds.bare.at(-1)!.rps)}, gateway mTLS ${Math.round(rounds.gateway.at(-1)!.rps)}, ` +
          `bare with tokens ${Math.round(rounds.bareTokens.at(-1)!.rps)}, gateway bearer ${Math.round(rounds.bearer.at(-1)!.rps)}, ` +
          `variant without / with audit ${Math.round(rounds.unaudited.at(-1)!.rps)} / ${Math.round(rounds.audited.at(-1)!.rps)} req/s\n`,
      );
    }

    const cpu = (results: readonly Result[]): number => median(results.map((r) => r.cpuUsPerRequest));
    gatewayCpuUs = cpu(rounds.gateway);
    const row = (name: string, results: readonly Result[]): string => {
      const errors = results.reduce((n, r) => n + r.errors + r.non2xx, 0);
      return `${name.padEnd(30)} ${String(Math.round(median(results.map((r) => r.rps)))).padStart(8)} ${String(median(results.map((r) => r.p50))).padStart(7)} ${String(median(results.map((r) => r.p99))).padStart(7)} ${String(errors).padStart(7)} ${String(Math.round(cpu(results))).padStart(11)}`;
    };
    process.stdout.write(
      `\n${'target'.padEnd(30)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'errors'.padStart(7)} ${'CPU µs/req'.padStart(11)}\n`,
    );
    process.stdout.write(`${row('bare undici TLS proxy', rounds.bare)}\n`);
    process.stdout.write(`${row('gateway (mTLS route)', rounds.gateway)}\n`);
    process.stdout.write(`${row('bare, same requests w/ tokens', rounds.bareTokens)}\n`);
    process.stdout.write(`${row(`gateway (bearer, ${tokens.length} tokens)`, rounds.bearer)}\n`);
    process.stdout.write(`${row('variant (mTLS), audit discarded', rounds.unaudited)}\n`);
    process.stdout.write(`${row('variant (mTLS), audit chained', rounds.audited)}\n`);
    if (rounds.redis.length > 0) process.stdout.write(`${row('gateway (mTLS), quotas on Redis', rounds.redis)}\n`);
    process.stdout.write(`${row(`gateway (mTLS), ${WORKERS} workers`, rounds.workers)}\n`);
    process.stdout.write(`${row('gateway (mTLS), 3 targets', rounds.targets)}\n`);
    const rps = (results: readonly Result[]): number => median(results.map((r) => r.rps));
    process.stdout.write(`ratio gateway/bare, mTLS route: ${(rps(rounds.gateway) / rps(rounds.bare)).toFixed(2)}\n`);
    process.stdout.write(`ratio gateway/bare, bearer route (JWT verification on): ${(rps(rounds.bearer) / rps(rounds.bareTokens)).toFixed(2)}\n`);
    // The load generator and the upstream share this machine's cores with the proxy under test, so req/s understates a
    // proxy that needs more CPU; the CPU each proxy process spends per request is the direct measure of its own cost.
    process.stdout.write(
      `CPU per request bare/gateway, mTLS route: ${(cpu(rounds.bare) / cpu(rounds.gateway)).toFixed(2)}, bearer route: ${(cpu(rounds.bareTokens) / cpu(rounds.bearer)).toFixed(2)}\n`,
    );
    // The audit log's price: the same launcher and config, with the chained, group-committed log and with it discarded.
    process.stdout.write(
      `audit chain cost, mTLS route: throughput with/without ${(rps(rounds.audited) / rps(rounds.unaudited)).toFixed(2)}, ` +
        `CPU per request without/with ${(cpu(rounds.unaudited) / cpu(rounds.audited)).toFixed(2)}\n`,
    );
    if (rounds.redis.length > 0) {
      // What sharing the limits costs: the same gateway with its route quota and pre-auth budget counted in Redis.
      process.stdout.write(
        `quotas on Redis / in memory, mTLS route: throughput ${(rps(rounds.redis) / rps(rounds.gateway)).toFixed(2)}, ` +
          `CPU per request ${(cpu(rounds.gateway) / cpu(rounds.redis)).toFixed(2)}\n`,
      );
    }
    // Balancing over three targets against the bare proxy with one: the price of the balancer and the health state.
    process.stdout.write(
      `ratio gateway with 3 targets / bare with 1, mTLS route: ${(rps(rounds.targets) / rps(rounds.bare)).toFixed(2)} ` +
        `(gateway with 1 target: ${(rps(rounds.gateway) / rps(rounds.bare)).toFixed(2)})\n`,
    );
    // All cores: with the load generator on the same machine, the workers share its cores with it and with the upstream.
    process.stdout.write(
      `${WORKERS} workers / 1 process, mTLS route (limits counted by the primary): throughput ${(rps(rounds.workers) / rps(rounds.gateway)).toFixed(2)} ` +
        `(${availableParallelism()} cores, the load generator and the upstream on the same machine)\n`,
    );
  } finally {
    await stopAll(children);
    removeWork(work);
  }
  await benchAuditQuery(gatewayCpuUs);
}

await main();
