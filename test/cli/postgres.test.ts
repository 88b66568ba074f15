// Gatehouse on PostgreSQL, end to end with the built command: the admin commands and `init` against a PostgreSQL store
// (GATEHOUSE_DATABASE_URL, read by the CLI only), two `gatehouse serve` processes sharing it (a client added by the CLI
// gets a token from one and calls the other; a disable made with the CLI is enforced by both), and PostgreSQL going away
// under a running gateway: the token endpoint fails closed with 503 while tokens already issued go on working (REL-06),
// and both recover when the server is back. Real server only; skipped with a visible message without one.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request, Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initDevCertificates } from '../../src/tls/ca.js';
import { runCli, serveCli, type CliResult, type ServeProcess } from '../support/cli.js';
import { removeDir } from '../support/harness.js';
import { dropTestSchemas, POSTGRES_URL, testSchema } from '../support/services.js';
import { hostPort, TcpRelay } from '../support/tcp-relay.js';
import { eventually } from '../support/eventually.js';

if (POSTGRES_URL === undefined) {
  describe.skip('gatehouse on PostgreSQL: SKIPPED (set GATEHOUSE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test)', () => {
    it('needs a PostgreSQL server', () => undefined);
  });
} else {
  const url = POSTGRES_URL;
  const work = mkdtempSync(join(tmpdir(), 'gatehouse-pg-cli-'));
  const certs = join(work, 'certs');
  const configFile = join(work, 'gatehouse.yaml');
  const schema = testSchema();
  const masterKey = randomBytes(32).toString('base64url');
  const where = `schema ${schema} at ${new URL(url).protocol}//${new URL(url).username}@${new URL(url).host}${new URL(url).pathname}`;
  const servers: ServeProcess[] = [];
  const agents: Agent[] = [];
  let ca: Buffer;

  afterAll(async () => {
    await Promise.all(servers.map((server) => server.stop()));
    await Promise.all(agents.map((agent) => agent.close()));
    await dropTestSchemas();
    removeDir(work);
  });

  beforeAll(async () => {
    await initDevCertificates(certs);
    ca = readFileSync(join(certs, 'ca.pem'));
    writeFileSync(
      configFile,
      `server: { host: 127.0.0.1, port: 0 }\n` +
        `tls: { cert: ${certs}/server.pem, key: ${certs}/server-key.pem }\n` +
        // A fixed issuer, so both instances issue and accept the same tokens; a short refresh, so a disable made with the
        // CLI reaches them quickly.
        `issuer: { issuer: 'https://gw.pg.test', refresh_interval_ms: 300 }\n` +
        `store: { postgres_schema: ${schema}, postgres_timeout_ms: 1000 }\n` +
        `routes:\n  - { id: api, match: { path_prefix: /api, methods: [GET] }, authn: [bearer], authz: { allow: authenticated, scopes: { all_of: [echo:read] } }, handler: { service: echo } }\n`,
    );
  });

  /** The operator's environment: the database URL and the master key, nothing of the test runner's own. */
  const env = (databaseUrl = url): NodeJS.ProcessEnv => {
    const { GATEHOUSE_MASTER_KEY: _m, GATEHOUSE_DATABASE_URL: _d, ...inherited } = process.env;
    return { ...inherited, GATEHOUSE_DATABASE_URL: databaseUrl, GATEHOUSE_MASTER_KEY: masterKey };
  };
  const gatehouse = (...args: string[]): CliResult => runCli([...args, '--config', configFile, '--data', join(work, 'cli-data')], env());
  const ok = (...args: string[]): string => {
    const result = gatehouse(...args);
    expect(result.stderr, args.join(' ')).toBe('');
    expect(result.status, args.join(' ')).toBe(0);
    return result.stdout;
  };

  async function serve(name: string, databaseUrl = url): Promise<ServeProcess> {
    const server = await serveCli(['--config', configFile, '--data', join(work, name)], env(databaseUrl));
    servers.push(server);
    return server;
  }

  function agent(): Agent {
    const created = new Agent({ connect: { ca, servername: 'localhost' } });
    agents.push(created);
    return created;
  }

  async function token(
    port: number,
    client: { id: string; secret: string },
  ): Promise<{ status: number; body: Record<string, unknown>; retryAfter: string | undefined }> {
    const response = await request(`https://127.0.0.1:${port}/oauth2/token`, {
      method: 'POST',
      dispatcher: agent(),
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}`,
      },
      body: 'grant_type=client_credentials',
    });
    const retryAfter = response.headers['retry-after'];
    return {
      status: response.statusCode,
      body: (await response.body.json()) as Record<string, unknown>,
      retryAfter: typeof retryAfter === 'string' ? retryAfter : undefined,
    };
  }

  async function call(port: number, accessToken: string): Promise<number> {
    const response = await request(`https://127.0.0.1:${port}/api/x`, { dispatcher: agent(), headers: { authorization: `Bearer ${accessToken}` } });
    await response.body.dump();
    return response.statusCode;
  }

  describe('gatehouse on PostgreSQL', () => {
    let client: { id: string; secret: string };

    it('admin commands refuse a schema without a store (66), naming it without the password; init creates it once', () => {
      for (const args of [
        ['clients', 'list'],
        ['keys', 'list'],
      ]) {
        const result = gatehouse(...args);
        expect(result.status, args.join(' ')).toBe(66);
        expect(result.stderr).toBe(`gatehouse: no credential store in ${where}\n`);
      }
      expect(ok('init')).toBe(`created credential store ${where}\n`);
      expect(JSON.parse(ok('init', '--json'))).toEqual({ store: where, backend: 'postgres', created: false });
      expect(ok('clients', 'list')).toBe('no clients\n');
    });

    it('a bad GATEHOUSE_DATABASE_URL is a configuration error (78), and an unreachable server a clear failure', () => {
      const bad = runCli(['clients', 'list', '--config', configFile], { ...env(), GATEHOUSE_DATABASE_URL: 'mysql://root@127.0.0.1/test' });
      expect(bad.status).toBe(78);
      expect(bad.stderr).toContain('GATEHOUSE_DATABASE_URL: must be a postgres:// URL');
      const unreachable = runCli(['clients', 'list', '--config', configFile], env('postgres://gate:hunter2-secret@127.0.0.1:1/test'));
      expect(unreachable.status).toBe(69);
      expect(unreachable.stderr).toBe(`gatehouse: open schema ${schema} at postgres://gate@127.0.0.1:1/test: connect ECONNREFUSED 127.0.0.1:1\n`);
      expect(unreachable.stderr).not.toContain('hunter2-secret');
      const served = runCli(['serve', '--config', configFile, '--data', join(work, 'unreachable')], env('postgres://gate:hunter2-secret@127.0.0.1:1/test'));
      expect(served.status).toBe(69);
      expect(served.stderr).toBe(`gatehouse: credential store: open schema ${schema} at postgres://gate@127.0.0.1:1/test: connect ECONNREFUSED 127.0.0.1:1\n`);
    });

    it('two instances share the store: a client added with the CLI gets a token from one and calls the other', async () => {
      const added = JSON.parse(ok('clients', 'add', 'pg-client', '--scope', 'echo:read', '--json')) as { client_id: string; client_secret: string };
      client = { id: added.client_id, secret: added.client_secret };
      const a = await serve('a');
      const b = await serve('b');
      const issued = await token(a.port, client);
      expect(issued.status).toBe(200);
      const accessToken = issued.body['access_token'] as string;
      expect(await call(b.port, accessToken)).toBe(200);
      expect(await call(a.port, accessToken)).toBe(200);
      expect(ok('keys', 'list')).toMatch(/signing/);

      // A disable made with the CLI ends the token on both instances.
      ok('clients', 'disable', client.id);
      await eventually(async () => (await call(a.port, accessToken)) === 401 && (await call(b.port, accessToken)) === 401);
      expect((await token(b.port, client)).status).toBe(401);
      ok('clients', 'enable', client.id);
      await eventually(async () => (await token(a.port, client)).status === 200);
    });

    it('PostgreSQL away: the token endpoint answers 503 with Retry-After, issued tokens go on working; both recover', async () => {
      const relay = await TcpRelay.start(hostPort(url, 5432));
      try {
        const relayed = new URL(url);
        relayed.hostname = '127.0.0.1';
        relayed.port = String(relay.port);
        const gw = await serve('c', relayed.toString());
        const issued = await token(gw.port, client);
        expect(issued.status).toBe(200);
        const accessToken = issued.body['access_token'] as string;

        relay.set('refuse');
        const refused = await token(gw.port, client);
        expect(refused.status).toBe(503);
        expect(refused.body['error']).toBe('temporarily_unavailable');
        expect(Number(refused.retryAfter)).toBeGreaterThan(0);
        // Bearer validation needs no store round trip: keys, revocations and client state are held in memory.
        expect(await call(gw.port, accessToken)).toBe(200);

        relay.set('blackhole');
        const hung = await token(gw.port, client);
        expect(hung.status).toBe(503);
        expect(await call(gw.port, accessToken)).toBe(200);

        relay.set('pass');
        await eventually(async () => (await token(gw.port, client)).status === 200, 10_000);
        expect(gw.lines.some((line) => line.includes('hunter2'))).toBe(false);
      } finally {
        await relay.close();
      }
    });
  });
}
