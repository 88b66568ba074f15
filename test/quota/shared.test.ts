// Issue #24 (part): route quotas and the pre-auth budget on Redis. Real `gatehouse serve` processes and a real Redis: two
// instances sharing a quota never admit more than it together; Redis killed (a private redis-server this file starts and
// kills) → `degrade` routes go on with this instance's share, never a 5xx, `deny` routes answer 503 with Retry-After,
// both recover when it is back, and outage and recovery are on record; a Redis that never answers costs a bounded wait.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../../src/audit/read.js';
import { generateClientId } from '../../src/issuer/secrets.js';
import { initDevCertificates } from '../../src/tls/ca.js';
import { runCli, serveCli, type ServeProcess } from '../support/cli.js';
import { eventually } from '../support/eventually.js';
import { GatewayClient } from '../support/gateway-client.js';
import { removeDir, startUpstream } from '../support/harness.js';
import { hostPort, TcpRelay } from '../support/tcp-relay.js';

const REDIS_URL = process.env['GATEHOUSE_TEST_REDIS_URL'] || undefined;
if (process.env['GATEHOUSE_REQUIRE_SERVICES'] === '1' && REDIS_URL === undefined)
  throw new Error('GATEHOUSE_REQUIRE_SERVICES=1 but GATEHOUSE_TEST_REDIS_URL is not set');

/** A port free a moment ago (redis-server cannot bind port 0 and say which it got). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A redis-server of this file's own, on 127.0.0.1, without persistence: it can be killed without touching the shared one. */
async function privateRedis(port: number, listen: readonly string[] = ['--port', String(port)]): Promise<ChildProcess> {
  const child = spawn('redis-server', [...listen, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  // Probed by connecting, never by binding the port: a probe that held the port for a moment could take it from the
  // redis-server starting up (which then exits), and the wait would run out with nothing listening (CI saw this once).
  await eventually(
    () =>
      new Promise<boolean>((resolve, reject) => {
        if (child.exitCode !== null || child.signalCode !== null) {
          reject(new Error(`redis-server for port ${port} exited (${child.exitCode ?? child.signalCode})`));
          return;
        }
        const probe = connect({ host: '127.0.0.1', port }, () => {
          probe.destroy();
          resolve(true);
        });
        probe.once('error', () => resolve(false));
      }),
    10_000,
    `redis-server listening on ${port}`,
  );
  return child;
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

if (REDIS_URL === undefined) {
  describe.skip('shared quotas on Redis: SKIPPED (set GATEHOUSE_TEST_REDIS_URL=redis://127.0.0.1:6379)', () => {
    it('needs a Redis server', () => undefined);
  });
} else {
  const work = mkdtempSync(join(tmpdir(), 'gatehouse-shared-quota-'));
  const certs = join(work, 'certs');
  const servers: ServeProcess[] = [];
  const redises: ChildProcess[] = [];
  let http: GatewayClient;

  /** A config file in the work directory: this file's listener and certificate, then `rest` (YAML lines). */
  function configFile(name: string, rest: string): string {
    const file = join(work, `${name}.yaml`);
    writeFileSync(file, `server: { host: 127.0.0.1, port: 0 }\ntls: { cert: ${certs}/server.pem, key: ${certs}/server-key.pem }\n${rest}`);
    return file;
  }
  const PUBLIC_ROUTE = `routes:\n  - { id: public, match: { path_prefix: /public, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n`;

  /** A config with one public route per outage policy, both spending quota `q`, on Redis at `url`. */
  function config(name: string, url: string, quota: string, redis = ''): string {
    return configFile(
      name,
      `redis: { url: '${url}', key_prefix: 'gh-test-${randomBytes(6).toString('hex')}', timeout_ms: 200${redis} }\n` +
        `quotas: { q: ${quota} }\n` +
        `audit: { instance: ${name} }\n` +
        `routes:\n` +
        `  - { id: degrade, match: { path_prefix: /degrade, methods: [GET] }, authn: [none], authz: { allow: anyone }, quota: q, handler: { service: echo } }\n` +
        `  - { id: deny, match: { path_prefix: /deny, methods: [GET] }, authn: [none], authz: { allow: anyone }, quota: q, quota_outage: deny, handler: { service: echo } }\n`,
    );
  }
  /** `gatehouse serve` with `file` and its own data directory; Redis only as the file says (never GATEHOUSE_REDIS_URL). */
  async function serve(file: string, data: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<ServeProcess> {
    const { GATEHOUSE_REDIS_URL: _r, ...env } = process.env;
    const server = await serveCli(['--config', file, '--data', join(work, data)], { ...env, ...extraEnv });
    servers.push(server);
    return server;
  }
  const statuses = async (port: number, path: string, n: number): Promise<number[]> => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push((await http.get(port, path)).status);
    return out;
  };
  const count = (list: readonly number[], status: number): number => list.filter((s) => s === status).length;
  const events = (data: string, type: string): number => readRecords(join(work, data, 'audit')).filter((record) => record.type === type).length;

  beforeAll(async () => {
    await initDevCertificates(certs);
    http = new GatewayClient(readFileSync(join(certs, 'ca.pem')));
  });

  afterAll(async () => {
    await Promise.all(servers.map((server) => server.stop()));
    for (const redis of redises) await kill(redis);
    await http.close();
    removeDir(work);
  });

  describe('shared quotas on Redis', () => {
    it('two instances sharing a quota never admit more than it together; both send the RateLimit fields on 200 and 429', async () => {
      // One file for both: the same key prefix, so the same counters.
      const file = config('pair', REDIS_URL, '{ points: 10, duration_s: 60 }');
      const [a, b] = await Promise.all([serve(file, 'pair-a'), serve(file, 'pair-b')]);
      const first = await http.get(b.port, '/degrade/x');
      // The count left is the shared one: B's first answer already says 9 of 10 are left, whoever spends them.
      expect(first.status).toBe(200);
      expect(first.headers['ratelimit-policy']).toBe('"q";q=10;w=60');
      expect(first.headers['ratelimit']).toMatch(/^"q";r=9;t=\d+$/);
      const answers: number[] = [first.status];
      for (let i = 0; i < 15; i++) answers.push(...(await Promise.all([http.get(a.port, '/degrade/x'), http.get(b.port, '/degrade/x')])).map((r) => r.status));
      expect(count(answers, 200)).toBe(10);
      expect(count(answers, 429)).toBe(21);
      const refused = await http.get(a.port, '/deny/x');
      expect(refused.status).toBe(429);
      expect(refused.headers['ratelimit-policy']).toBe('"q";q=10;w=60');
      expect(refused.headers['ratelimit']).toMatch(/^"q";r=0;t=\d+$/);
      expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
      await Promise.all([a.stop(), b.stop()]);
    });

    it('concurrency slots are shared too: two held on one instance, the other refuses a third; freed on both when they end', async () => {
      const upstream = await startUpstream();
      upstream.respond = (req, res) => {
        if (req.url?.includes('/slow')) setTimeout(() => res.end('late'), 600);
        else res.end('ok');
      };
      try {
        const file = configFile(
          'slots',
          `redis: { url: '${REDIS_URL}', key_prefix: 'gh-test-${randomBytes(6).toString('hex')}' }\n` +
            `upstreams: { app: { url: '${upstream.url}' } }\n` +
            `quotas: { pair: { concurrent: 2 } }\n` +
            `routes:\n  - { id: held, match: { path_prefix: /held, methods: [GET] }, authn: [none], authz: { allow: anyone }, quota: pair, handler: { proxy: { upstream: app } } }\n`,
        );
        const [a, b] = await Promise.all([serve(file, 'slots-a'), serve(file, 'slots-b')]);
        const held = [http.get(a.port, '/held/slow/1'), http.get(a.port, '/held/slow/2')];
        await eventually(() => upstream.requests.length === 2, 3000, 'two requests held upstream');
        const third = await http.get(b.port, '/held/ok');
        expect(third.status).toBe(429);
        expect(third.headers['ratelimit']).toBe('"pair.concurrency";r=0');
        expect((await Promise.all(held)).map((r) => r.status)).toEqual([200, 200]);
        await eventually(async () => (await http.get(b.port, '/held/ok')).status === 200, 3000, 'B admitting once the slots are free');
        // A release reaches Redis just after its answer (it is not awaited): once the last one has, a request alone holds
        // one slot of two on either instance.
        await eventually(
          async () => {
            const next = await http.get(a.port, '/held/ok');
            return next.status === 200 && next.headers['ratelimit'] === '"pair.concurrency";r=1';
          },
          3000,
          'A admitting with one slot left',
        );
        await Promise.all([a.stop(), b.stop()]);
      } finally {
        await upstream.close();
      }
    });

    it("two instances share the token endpoint's brute-force limits: failures on either count toward one block", async () => {
      const file = configFile(
        'issuer',
        `redis: { url: '${REDIS_URL}', key_prefix: 'gh-test-${randomBytes(6).toString('hex')}' }\n` +
          `issuer: { issuer: 'https://gw.shared.test', client_auth: { per_ip: { points: 6, duration_s: 60 }, max_consecutive_failures: 3 } }\n` +
          `store: { path: ${join(work, 'shared.db')} }\n` +
          PUBLIC_ROUTE,
      );
      const masterKey = { GATEHOUSE_MASTER_KEY: randomBytes(32).toString('base64url') };
      // One after the other: the first creates the shared SQLite store.
      const a = await serve(file, 'issuer-a', masterKey);
      const b = await serve(file, 'issuer-b', masterKey);
      const guessed = { id: generateClientId(), secret: 'wrong' };
      const attempts: number[] = [];
      for (const port of [a.port, b.port, a.port, b.port]) attempts.push((await http.token(port, guessed)).status);
      // Three failures (two on A, one on B) block the pair on both: alone, each instance would still have allowed a try.
      expect(attempts).toEqual([401, 401, 401, 429]);
      // The per-IP budget (6 attempts) is shared too: four spent above, two more, then refused on either.
      const other = { id: generateClientId(), secret: 'wrong' };
      const more: number[] = [];
      for (const port of [a.port, b.port, a.port]) more.push((await http.token(port, other)).status);
      expect(more).toEqual([401, 401, 429]);
      await Promise.all([a.stop(), b.stop()]);
    });

    it("Redis killed: degrade routes count this instance's share (no 5xx), deny routes answer 503; both recover; all on record", async () => {
      const port = await freePort();
      let redis = await privateRedis(port);
      redises.push(redis);
      // Two instances share the limit: alone, each enforces half of it while Redis is away.
      const gw = await serve(config('outage', `redis://127.0.0.1:${port}`, '{ points: 6, duration_s: 60 }', ', instances: 2'), 'outage');
      expect(await statuses(gw.port, '/deny/x', 2)).toEqual([200, 200]);

      await kill(redis);
      const degraded = await statuses(gw.port, '/degrade/x', 6);
      expect(degraded.filter((s) => s >= 500)).toEqual([]);
      // Never unlimited: the share is 3 (6 / 2 instances).
      expect(count(degraded, 200)).toBe(3);
      expect(count(degraded, 429)).toBe(3);
      const denied = await http.get(gw.port, '/deny/x');
      expect(denied.status).toBe(503);
      expect(Number(denied.headers['retry-after'])).toBeGreaterThan(0);

      redis = await privateRedis(port);
      redises.push(redis);
      // Back within the reconnect backoff (at most 5 s); a fresh Redis has no counts, so deny admits again.
      await eventually(async () => (await http.get(gw.port, '/deny/x')).status === 200, 15_000, 'deny admitting after Redis is back');
      await eventually(() => events('outage', 'limiter_store_recovered') === 1, 5000, 'the recovery on record');
      expect(events('outage', 'limiter_store_unavailable')).toBe(1);
      // The operational log is buffered (flushed every 250 ms): the line may reach the pipe after the recovery.
      await eventually(() => gw.lines.some((line) => line.includes('shared limiter store (Redis) unreachable')), 2000, 'the outage logged');
      await gw.stop();
    });

    it('RL-04 a key over its rate is refused from memory, not from Redis; RL-08 every key the gateway writes expires', async () => {
      const port = await freePort();
      redises.push(await privateRedis(port));
      const gw = await serve(config('hammer', `redis://127.0.0.1:${port}`, '{ points: 3, duration_s: 60 }'), 'hammer');
      const observer = new Redis(port, '127.0.0.1', { lazyConnect: true });
      await observer.connect();
      const monitor = await observer.monitor();
      let quotaCommands = 0;
      monitor.on('monitor', (_time: string, args: readonly unknown[]) => {
        if (args.some((arg) => String(arg).includes(':quota:q:rate:'))) quotaCommands++;
      });
      try {
        expect(await statuses(gw.port, '/degrade/x', 4)).toEqual([200, 200, 200, 429]);
        await eventually(() => quotaCommands >= 4, 2000, 'the first four counted in Redis');
        const counted = quotaCommands;
        const hammered = await statuses(gw.port, '/degrade/x', 100);
        expect(count(hammered, 429)).toBe(100);
        // The refused key is answered from memory for the rest of its window: Redis hears nothing more about it.
        expect(quotaCommands).toBe(counted);
      } finally {
        monitor.disconnect();
      }
      const keys = await observer.keys('*');
      expect(keys.length).toBeGreaterThan(0);
      for (const key of keys) expect(await observer.pttl(key), key).toBeGreaterThan(0);
      observer.disconnect();
      await gw.stop();
    });

    it('rediss:// with redis.ca: the limits count in a TLS Redis whose certificate chains to that CA; another CA is refused', async () => {
      const port = await freePort();
      const tls = [
        ...['--port', '0', '--tls-port', String(port)],
        ...['--tls-cert-file', join(certs, 'server.pem'), '--tls-key-file', join(certs, 'server-key.pem')],
        ...['--tls-ca-cert-file', join(certs, 'ca.pem'), '--tls-auth-clients', 'no'],
      ];
      redises.push(await privateRedis(port, tls));
      const url = `rediss://127.0.0.1:${port}`;
      const gw = await serve(config('tls', url, '{ points: 2, duration_s: 60 }', `, ca: ${join(certs, 'ca.pem')}`), 'tls');
      expect(await statuses(gw.port, '/degrade/x', 3)).toEqual([200, 200, 429]);
      const observer = new Redis(url, { tls: { ca: readFileSync(join(certs, 'ca.pem')) }, lazyConnect: true });
      await observer.connect();
      expect((await observer.keys('*')).some((key) => key.includes(':quota:q:rate:'))).toBe(true);
      observer.disconnect();
      expect(events('tls', 'limiter_store_unavailable')).toBe(0);
      await gw.stop();

      // A server certificate from another CA: never trusted, so the limits stay in memory and the outage is on record.
      const otherCa = join(work, 'other-certs');
      await initDevCertificates(otherCa);
      const wary = await serve(config('wary', url, '{ points: 2, duration_s: 60 }', `, ca: ${join(otherCa, 'ca.pem')}`), 'wary');
      expect(await statuses(wary.port, '/degrade/x', 3)).toEqual([200, 200, 429]);
      await eventually(() => events('wary', 'limiter_store_unavailable') === 1, 5000, 'the untrusted Redis on record');
      await wary.stop();
    });

    it('RL-07 Redis killed under the token endpoint: failures are still counted (in memory) and still block, never unlimited', async () => {
      const port = await freePort();
      const redis = await privateRedis(port);
      redises.push(redis);
      const file = configFile(
        'rl07',
        `redis: { url: 'redis://127.0.0.1:${port}', timeout_ms: 200 }\n` +
          `issuer: { issuer: 'https://gw.rl07.test', client_auth: { max_consecutive_failures: 3 } }\n` +
          PUBLIC_ROUTE,
      );
      const gw = await serve(file, 'rl07', { GATEHOUSE_MASTER_KEY: randomBytes(32).toString('base64url') });
      await kill(redis);
      const guessed = { id: generateClientId(), secret: 'wrong' };
      const attempts: number[] = [];
      for (let i = 0; i < 5; i++) attempts.push((await http.token(gw.port, guessed)).status);
      expect(attempts).toEqual([401, 401, 401, 429, 429]);
      await gw.stop();
    });

    it('a redis.ca that cannot be read, or a GATEHOUSE_REDIS_URL that is no redis URL, ends the start with exit 78 and one line', () => {
      const missing = join(work, 'no-such-ca.pem');
      const file = config('badca', 'rediss://127.0.0.1:6390', '{ points: 2, duration_s: 60 }', `, ca: ${missing}`);
      const { GATEHOUSE_REDIS_URL: _r, ...env } = process.env;
      const unreadable = runCli(['serve', '--config', file, '--data', join(work, 'badca')], env);
      expect(unreadable.status).toBe(78);
      expect(unreadable.stderr).toContain(`redis.ca: cannot read ${missing} (ENOENT)`);
      const wrongUrl = runCli(['serve', '--config', file, '--data', join(work, 'badca')], { ...env, GATEHOUSE_REDIS_URL: 'http://127.0.0.1:6379' });
      expect(wrongUrl.status).toBe(78);
      expect(wrongUrl.stderr).toContain('GATEHOUSE_REDIS_URL: must be a redis:// or rediss:// URL');
    });

    it('a Redis that never answers: each request waits at most about the command timeout; degrade admits, deny refuses', async () => {
      const relay = await TcpRelay.start(hostPort(REDIS_URL, 6379));
      try {
        relay.set('blackhole');
        const gw = await serve(config('silent', `redis://127.0.0.1:${relay.port}`, '{ points: 100, duration_s: 60 }'), 'silent');
        const started = Date.now();
        expect((await http.get(gw.port, '/degrade/x')).status).toBe(200);
        expect((await http.get(gw.port, '/deny/x')).status).toBe(503);
        // Bounded (timeout_ms 200 per command), not the minutes an unanswered TCP connection can last.
        expect(Date.now() - started).toBeLessThan(5000);
        await gw.stop();
      } finally {
        await relay.close();
      }
    });
  });
}
