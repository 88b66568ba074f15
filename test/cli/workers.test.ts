// Issue #25: `gatehouse serve --workers N`, with real processes. Two workers serve one port and each writes its own chain;
// a per-principal quota, concurrency slots and the DPoP replay cache hold across workers without Redis (the primary counts); a worker killed with
// SIGKILL is replaced and no later request fails, and workers do not outlive a killed primary; SIGHUP and SIGTERM reach every worker, SIGTERM drains in-flight requests
// and every chain verifies afterwards; workers that keep dying stop the gateway; bad values are refused.
import { createHash, randomUUID } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { request } from 'node:https';
import { connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../../src/audit/read.js';
import { initDevCertificates } from '../../src/tls/ca.js';
import { auditVerify, runCli, serveCli, type ServeProcess } from '../support/cli.js';
import { eventually } from '../support/eventually.js';
import { removeDir, startUpstream, type TestUpstream } from '../support/harness.js';

const work = mkdtempSync(join(tmpdir(), 'gatehouse-workers-'));
const certs = join(work, 'certs');
const servers: ServeProcess[] = [];
let ca: Buffer;
let upstream: TestUpstream;

/** A config file: this file's listener and certificate (`cert` and `key` may point elsewhere), then `rest` (YAML). */
function configFile(name: string, rest: string, tls = `cert: ${certs}/server.pem, key: ${certs}/server-key.pem`): string {
  const file = join(work, `${name}.yaml`);
  writeFileSync(
    file,
    `server: { host: 127.0.0.1, port: 0 }\ntls: { ${tls} }\naudit: { instance: ${name} }\n` +
      `quotas: { q: { points: 10, duration_s: 60 }, pair: { concurrent: 2 } }\n` +
      `upstreams: { app: { url: 'http://127.0.0.1:${upstream.port}' } }\n` +
      'routes:\n' +
      '  - { id: open, match: { path_prefix: /open, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n' +
      '  - { id: quota, match: { path_prefix: /quota, methods: [GET] }, authn: [none], authz: { allow: anyone }, quota: q, handler: { service: echo } }\n' +
      '  - { id: slow, match: { path_prefix: /slow, methods: [GET] }, authn: [none], authz: { allow: anyone }, quota: pair, handler: { proxy: { upstream: app } } }\n' +
      rest,
  );
  return file;
}

/** The environment without the store and limiter URLs a developer may have set: the config file alone decides. */
const { GATEHOUSE_REDIS_URL: _redis, GATEHOUSE_DATABASE_URL: _database, ...env } = process.env;

async function serve(name: string, args: readonly string[] = ['--workers', '2'], rest = ''): Promise<ServeProcess & { readonly data: string }> {
  const data = join(work, `${name}-data`);
  const server = await serveCli(['--config', configFile(name, rest), '--data', data, ...args], env);
  servers.push(server);
  return Object.assign(server, { data });
}

/** GET on a connection of its own: the primary hands each new connection to the next worker. */
function get(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, ca, servername: 'localhost', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

/** One request on a connection of its own, with headers and a body: its status and body text. */
function send(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ readonly status: number; readonly body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers, ca, servername: 'localhost', agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** One TLS connection and one request on it, offering `session`: whether it resumed, and the ticket it got. */
function handshake(port: number, session: Buffer | undefined): Promise<{ readonly reused: boolean; readonly ticket: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    let ticket: Buffer | undefined;
    const socket = connect({
      host: '127.0.0.1',
      port,
      ca,
      servername: 'localhost',
      ALPNProtocols: ['http/1.1'],
      ...(session !== undefined ? { session } : {}),
    });
    socket.on('session', (data: Buffer) => {
      ticket = data;
    });
    let reused = false;
    socket.once('secureConnect', () => {
      reused = socket.isSessionReused();
      socket.end('GET /open/x HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n');
    });
    socket.on('data', () => undefined);
    socket.once('close', () => resolve({ reused, ticket }));
    socket.once('error', reject);
  });
}

const lines = (server: ServeProcess, msg: string): Array<Record<string, unknown>> =>
  server.lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line['msg'] === msg);

const exitOf = (server: ServeProcess): Promise<number | null> =>
  server.child.exitCode !== null || server.child.signalCode !== null
    ? Promise.resolve(server.child.exitCode)
    : new Promise((resolve) => server.child.once('exit', (code) => resolve(code)));

/** Whether a process runs (a zombie no longer does: an orphan's parent may not reap it at once). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Allow records in one worker's chain. */
const allows = (data: string, chain: string): number =>
  readRecords(join(data, 'audit')).filter((record) => record.instance === chain && record.decision === 'allow').length;

/** Decision records (allow or deny) in one worker's chain. */
const decisions = (data: string, chain: string): number =>
  readRecords(join(data, 'audit')).filter((record) => record.instance === chain && (record.decision === 'allow' || record.decision === 'deny')).length;

beforeAll(async () => {
  await initDevCertificates(certs);
  ca = readFileSync(join(certs, 'ca.pem'));
  upstream = await startUpstream();
});

afterAll(async () => {
  await Promise.all(servers.map((server) => server.stop()));
  await upstream.close();
  removeDir(work);
});

describe('gatehouse serve --workers', () => {
  it('two workers serve one port, each writes its own chain, and SIGHUP reloads both (certificate and routes)', async () => {
    const server = await serve('pair');
    expect(lines(server, 'gatehouse listening')).toEqual([expect.objectContaining({ workers: 2, port: server.port })]);
    await eventually(() => lines(server, 'worker listening').length === 2, 5000, 'both workers say they listen');
    expect(lines(server, 'worker listening').map((line) => line['worker'])).toEqual(expect.arrayContaining([1, 2]));
    const statuses = await Promise.all(Array.from({ length: 12 }, () => get(server.port, '/open/x')));
    expect(statuses).toEqual(Array(12).fill(200));
    // The file gains a route: the primary re-reads it on SIGHUP and every worker puts it in force.
    configFile(
      'pair',
      '  - { id: extra, match: { path_prefix: /extra, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n',
    );
    server.child.kill('SIGHUP');
    await eventually(() => lines(server, 'TLS certificates reloaded').length === 2, 5000, 'both workers reloaded the certificate');
    await eventually(() => lines(server, 'configuration reloaded').length === 2, 5000, 'both workers reloaded the configuration');
    expect(await Promise.all(Array.from({ length: 6 }, () => get(server.port, '/extra/x')))).toEqual(Array(6).fill(200));
    // A replacement starts with the configuration in force, the reloaded one.
    process.kill(lines(server, 'worker started').find((line) => line['worker'] === 2)?.['pid'] as number, 'SIGKILL');
    await eventually(() => lines(server, 'worker listening').length === 3, 10_000, 'the replacement listens');
    expect(await Promise.all(Array.from({ length: 6 }, () => get(server.port, '/extra/x')))).toEqual(Array(6).fill(200));
    await server.stop();
    expect(server.child.exitCode).toBe(0);
    // Each worker's chain holds the requests it served; together they hold all of them.
    const [w1, w2] = [decisions(server.data, 'pair-w1'), decisions(server.data, 'pair-w2')];
    expect(w1).toBeGreaterThan(0);
    expect(w2).toBeGreaterThan(0);
    expect(w1 + w2).toBe(24);
    const reloaded = readRecords(join(server.data, 'audit')).filter((record) => record.type === 'config_reloaded');
    expect(reloaded.map((record) => record.instance).sort()).toEqual(['pair-w1', 'pair-w2']);
    const verify = auditVerify(join(server.data, 'audit'));
    expect(verify.status).toBe(0);
    expect(verify.report.chains.map((chain) => chain.instance).sort()).toEqual(['pair-w1', 'pair-w2']);
  });

  it('a TLS session made on one worker resumes on the other: the workers share the ticket keys', async () => {
    const server = await serve('tickets');
    let { ticket } = await handshake(server.port, undefined);
    const reused: boolean[] = [];
    // The primary hands each new connection to the next worker: these alternate between the two.
    for (let i = 0; i < 6; i++) {
      const next = await handshake(server.port, ticket);
      reused.push(next.reused);
      ticket = next.ticket ?? ticket;
    }
    expect(reused).toEqual(Array(6).fill(true));
    // A replacement worker uses the keys the others use.
    process.kill(lines(server, 'worker started').find((line) => line['worker'] === 2)?.['pid'] as number, 'SIGKILL');
    await eventually(() => lines(server, 'worker listening').length === 3, 10_000, 'the replacement listening');
    const again: boolean[] = [];
    for (let i = 0; i < 4; i++) again.push((await handshake(server.port, ticket)).reused);
    expect(again).toEqual(Array(4).fill(true));
    await server.stop();
  });

  it('a quota is not exceeded across workers without Redis: the primary counts for both', async () => {
    const server = await serve('quota');
    const statuses = await Promise.all(Array.from({ length: 30 }, () => get(server.port, '/quota/x')));
    expect(statuses.filter((s) => s === 200)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(20);
    await server.stop();
    // Both workers decided some of the requests: the limit held across them (each counting alone would admit 10 each), not
    // merely inside one. Which worker admitted the 10 is a race, and not the property.
    expect(allows(server.data, 'quota-w1') + allows(server.data, 'quota-w2')).toBe(10);
    expect(decisions(server.data, 'quota-w1')).toBeGreaterThan(0);
    expect(decisions(server.data, 'quota-w2')).toBeGreaterThan(0);
  });

  it('a DPoP proof is accepted once across workers without Redis: the primary remembers it for both (OA-20)', async () => {
    const rest =
      '  - { id: dpop, match: { path_prefix: /dpop, methods: [GET] }, authn: [dpop], authz: { allow: authenticated }, handler: { service: echo } }\n' +
      'issuer: {}\n';
    const server = await serve('dpop', ['--workers', '2'], rest);
    const added = runCli(['clients', 'add', 'keyholder', '--scope', 'echo:read', '--json', '--config', join(work, 'dpop.yaml'), '--data', server.data], env);
    expect(added.status, added.stderr).toBe(0);
    const client = JSON.parse(added.stdout) as { client_id: string; client_secret: string };
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = await exportJWK(publicKey);
    const origin = `https://127.0.0.1:${server.port}`;
    const proof = (htm: string, htu: string, extra: Record<string, unknown> = {}): Promise<string> =>
      new SignJWT({ htm, htu, iat: Math.floor(Date.now() / 1000), jti: randomUUID(), ...extra })
        .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk })
        .sign(privateKey);
    const basic = `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}`;
    const issued = await send(
      server.port,
      'POST',
      '/oauth2/token',
      { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', dpop: await proof('POST', `${origin}/oauth2/token`) },
      'grant_type=client_credentials',
    );
    expect(issued.status, issued.body).toBe(200);
    const token = String((JSON.parse(issued.body) as { access_token?: unknown }).access_token);
    const ath = createHash('sha256').update(token).digest('base64url');
    const dpop = await proof('GET', `${origin}/dpop/x`, { ath });
    // The same proof on ten connections of their own: the primary hands them to both workers in turn.
    const answers = await Promise.all(Array.from({ length: 10 }, () => send(server.port, 'GET', '/dpop/x', { authorization: `DPoP ${token}`, dpop })));
    expect(answers.map((answer) => answer.status).sort()).toEqual([200, 401, 401, 401, 401, 401, 401, 401, 401, 401]);
    await server.stop();
    expect(decisions(server.data, 'dpop-w1')).toBeGreaterThan(0);
    expect(decisions(server.data, 'dpop-w2')).toBeGreaterThan(0);
  });

  it.skipIf(process.env['GATEHOUSE_TEST_REDIS_URL'] === undefined || process.env['GATEHOUSE_TEST_REDIS_URL'] === '')(
    'with redis configured, workers count in Redis: the quota still holds across them',
    async () => {
      const prefix = `gh-test-workers-${process.pid}-${Date.now()}`;
      const server = await serve('redis', ['--workers', '2'], `redis: { url: '${process.env['GATEHOUSE_TEST_REDIS_URL']}', key_prefix: ${prefix} }\n`);
      const statuses = await Promise.all(Array.from({ length: 24 }, () => get(server.port, '/quota/x')));
      expect(statuses.filter((s) => s === 200)).toHaveLength(10);
      expect(statuses.filter((s) => s === 429)).toHaveLength(14);
      await server.stop();
      // Both workers decided some, Redis answered throughout (no outage share of 5 each), and 10 were admitted in all.
      expect(allows(server.data, 'redis-w1') + allows(server.data, 'redis-w2')).toBe(10);
      expect(decisions(server.data, 'redis-w1')).toBeGreaterThan(0);
      expect(decisions(server.data, 'redis-w2')).toBeGreaterThan(0);
      expect(readRecords(join(server.data, 'audit')).filter((record) => record.type === 'limiter_store_unavailable')).toEqual([]);
    },
  );

  it('concurrency slots hold across workers, and SIGTERM drains the requests in flight on every worker', async () => {
    const held: Array<() => void> = [];
    upstream.respond = (_req, res) => held.push(() => res.end('done'));
    const server = await serve('slots');
    // Two requests on two connections: one per worker. Each holds one of the quota's two slots.
    const first = [get(server.port, '/slow/a'), get(server.port, '/slow/b')];
    await eventually(() => held.length === 2, 5000, 'both requests at the upstream');
    // A third, on either worker, finds both slots taken.
    expect(await get(server.port, '/slow/c')).toBe(429);
    expect(await get(server.port, '/slow/d')).toBe(429);
    server.child.kill('SIGTERM');
    await eventually(() => lines(server, 'draining').length === 2, 5000, 'both workers draining');
    for (const release of held) release();
    expect(await Promise.all(first)).toEqual([200, 200]);
    expect(await exitOf(server)).toBe(0);
    upstream.respond = (_req, res) => res.end('ok');
    const verify = auditVerify(join(server.data, 'audit'));
    expect(verify.status).toBe(0);
    expect(verify.report.chains.map((chain) => chain.instance).sort()).toEqual(['slots-w1', 'slots-w2']);
    const stops = readRecords(join(server.data, 'audit')).filter((record) => record.type === 'gateway_stop');
    expect(stops.map((record) => record.instance).sort()).toEqual(['slots-w1', 'slots-w2']);
  });

  it('a worker killed with SIGKILL is replaced, no later request fails, and its slots are freed', async () => {
    const held: Array<() => void> = [];
    upstream.respond = (_req, res) => held.push(() => res.end('done'));
    const server = await serve('kill');
    // Both slots taken, usually one on each worker (the primary hands connections round-robin, but that is not a promise);
    // the slots held on the worker about to die must not stay taken.
    const slow = [get(server.port, '/slow/a').catch(() => 0), get(server.port, '/slow/b').catch(() => 0)];
    await eventually(() => held.length === 2, 5000, 'both requests at the upstream');
    // The victim is the worker that admitted /slow/a (its allow is on record before the upstream saw the request); the
    // slots it frees are the slow requests it admitted: one, or both when the two connections went to it.
    const slowAllows = readRecords(join(server.data, 'audit')).filter((record) => record.decision === 'allow' && record.route === 'slow');
    const victimChain = slowAllows.find((record) => record.path === '/slow/a')?.instance;
    expect(victimChain === 'kill-w1' || victimChain === 'kill-w2').toBe(true);
    const freed = slowAllows.filter((record) => record.instance === victimChain).length;
    const victim = lines(server, 'worker started').find((line) => `kill-w${String(line['worker'])}` === victimChain)?.['pid'];
    expect(typeof victim).toBe('number');
    process.kill(victim as number, 'SIGKILL');
    await eventually(() => lines(server, 'worker replaced').length === 1, 5000, 'the worker replaced');
    expect((await Promise.all(Array.from({ length: 10 }, () => get(server.port, '/open/x')))).every((s) => s === 200)).toBe(true);
    await eventually(() => lines(server, 'worker listening').length === 3, 10_000, 'the replacement listening');
    expect((await Promise.all(Array.from({ length: 10 }, () => get(server.port, '/open/x')))).every((s) => s === 200)).toBe(true);
    // The dead worker's slots are free again: as many more requests are admitted as it held, while the survivor still
    // holds its own — unless the machine was so loaded that a worker got no answer from the primary within a second (it
    // says so in its log): its limiter's outage policy then admits on the worker's own share, which can admit one more.
    upstream.respond = (_req, res) => res.end('ok');
    const statuses = await Promise.all([get(server.port, '/slow/c'), get(server.port, '/slow/d')]);
    expect(statuses.every((s) => s === 200 || s === 429)).toBe(true);
    const admitted = statuses.filter((s) => s === 200).length;
    // Log lines reach stdout within 250 ms.
    await new Promise((resolve) => setTimeout(resolve, 400));
    if (lines(server, 'the primary did not answer a limiter call in time').length > 0) expect(admitted).toBeGreaterThanOrEqual(freed);
    else expect(admitted).toBe(freed);
    for (const release of held) release();
    await Promise.all(slow);
    await server.stop();
    expect(server.child.exitCode).toBe(0);
    // The replacement continued the dead worker's chain; every chain verifies.
    const verify = auditVerify(join(server.data, 'audit'));
    expect(verify.status).toBe(0);
    expect(verify.report.chains.map((chain) => chain.instance).sort()).toEqual(['kill-w1', 'kill-w2']);
  });

  it('/readyz answers for the worker that got the connection: one worker draining, the other ready', async () => {
    const server = await serve('ready', ['--workers', '2'], 'shutdown: { readiness_grace_ms: 3000 }\n');
    const first = lines(server, 'worker started').find((line) => line['worker'] === 1)?.['pid'] as number;
    // Worker 1 alone is told to stop: it is not ready for the grace period, while it still serves.
    process.kill(first, 'SIGTERM');
    await eventually(() => lines(server, 'not ready; serving until the readiness grace ends').length === 1, 5000, 'worker 1 in its grace');
    const ready: number[] = [];
    for (let i = 0; i < 8; i++) ready.push(await get(server.port, '/readyz'));
    expect(ready.filter((s) => s === 503).length).toBeGreaterThan(0);
    expect(ready.filter((s) => s === 200).length).toBeGreaterThan(0);
    expect((await Promise.all(Array.from({ length: 6 }, () => get(server.port, '/open/x')))).every((s) => s === 200)).toBe(true);
    // It stops on its own, and the primary replaces it.
    await eventually(() => lines(server, 'worker replaced').length === 1, 10_000, 'worker 1 replaced');
    await server.stop();
  });

  it('workers whose primary is killed exit with it', async () => {
    const server = await serve('orphans');
    const pids = lines(server, 'worker started').map((line) => line['pid'] as number);
    expect(pids).toHaveLength(2);
    server.child.kill('SIGKILL');
    await eventually(() => pids.every((pid) => !alive(pid)), 10_000, 'both workers gone');
  });

  it('a replacement runs the configuration in force, not the file as edited since, nor one the workers refused', async () => {
    const server = await serve('edited');
    // A file that only a restart could apply: both workers refuse it on SIGHUP, and a replacement does not start with it.
    configFile('edited', 'limits: { max_connections: 5 }\n');
    server.child.kill('SIGHUP');
    await eventually(() => lines(server, 'configuration not reloaded; the configuration in force stays').length === 2, 5000, 'both refused');
    writeFileSync(join(work, 'edited.yaml'), 'server: { port: "not a port" }\n');
    const worker = lines(server, 'worker started').find((line) => line['worker'] === 2)?.['pid'];
    process.kill(worker as number, 'SIGKILL');
    await eventually(() => lines(server, 'worker listening').length === 3, 10_000, 'the replacement listening');
    expect((await Promise.all(Array.from({ length: 6 }, () => get(server.port, '/open/x')))).every((s) => s === 200)).toBe(true);
    // Every start of the gateway's chains names the same configuration.
    const hashes = readRecords(join(server.data, 'audit'))
      .filter((record) => record.type === 'gateway_start')
      .map((record) => (record as Record<string, unknown>)['config_sha256']);
    expect(hashes).toHaveLength(3);
    expect(new Set(hashes).size).toBe(1);
    await server.stop();
  });

  it('workers that keep dying stop the gateway with a clear message, not a restart loop', async () => {
    // Its own certificate, replaced by garbage once the gateway is up: every later worker start fails.
    const cert = join(work, 'loop-server.pem');
    copyFileSync(join(certs, 'server.pem'), cert);
    const data = join(work, 'loop-data');
    writeFileSync(join(work, 'loop.yaml'), readFileSync(configFile('loop', '')).toString().replace(`${certs}/server.pem`, cert));
    const server = await serveCli(['--config', join(work, 'loop.yaml'), '--data', data, '--workers', '2'], env);
    servers.push(server);
    const stderr: string[] = [];
    server.child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
    writeFileSync(cert, 'not a certificate\n');
    const worker = lines(server, 'worker started').find((line) => line['worker'] === 2)?.['pid'];
    process.kill(worker as number, 'SIGKILL');
    expect(await exitOf(server)).toBe(78);
    expect(stderr.join('')).toMatch(/workers exited 5 times in 30 s \(the last one, worker 2, with exit code 78\); stopping/);
    expect(lines(server, 'worker exited; replacing it')).toHaveLength(4);
  }, 60_000);

  it('a worker that cannot start fails the start: its message and exit code, no restart', () => {
    configFile('broken', '', `cert: ${work}/missing.pem, key: ${certs}/server-key.pem`);
    const result = runCli(['serve', '--config', join(work, 'broken.yaml'), '--data', join(work, 'broken-data'), '--workers', '2']);
    expect(result.status).toBe(78);
    expect(result.stderr).toContain('missing.pem');
    expect(result.stdout).not.toContain('worker replaced');
  });

  it('refuses bad worker counts with exit 64 (flag) or 78 (config)', () => {
    const file = configFile('bad', '');
    for (const value of ['0', '-1', 'abc', '65', '1.5']) {
      const result = runCli(['serve', '--config', file, '--workers', value]);
      expect(result.status, value).toBe(64);
      expect(result.stderr, value).toMatch(/--workers <n>.*must be an integer from 1 to 64, or auto/);
    }
    for (const value of ['0', '65', 'many']) {
      writeFileSync(join(work, 'bad-config.yaml'), readFileSync(file, 'utf8').replace('port: 0 }', `port: 0, workers: ${value} }`));
      const result = runCli(['serve', '--config', join(work, 'bad-config.yaml')]);
      expect(result.status, value).toBe(78);
      expect(result.stderr, value).toContain('server.workers');
    }
  });

  it('--workers auto starts one worker per core', async () => {
    const server = await serve('auto', ['--workers', 'auto']);
    const { availableParallelism } = await import('node:os');
    expect(lines(server, 'gatehouse listening')[0]?.['workers'] ?? 1).toBe(Math.min(64, availableParallelism()));
    await server.stop();
  });
});
