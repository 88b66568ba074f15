// Issue #22 items 4-8: the operator's questions, answered from a real gateway's chain by the built CLI. Every refusal for
// a client includes the token endpoint's invalid_client for it; a flood's aggregated refusals are counted; "who called
// /public" takes a path; an allowed request shows the status actually sent (its completion record), a 502 included.
import { route } from '../support/routes.js';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addClient, basicAuth, callWith, getToken, postForm, send, withIssuer, type TestClient } from '../support/issuer.js';
import { startGateway } from '../support/harness.js';

const CLI = join(import.meta.dirname, '../../dist/src/cli/main.js');
const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-questions-'));
const auditDir = join(dataDir, 'audit');
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

let client: TestClient;
const FLOOD = 40;

beforeAll(async () => {
  const gw = await startGateway(
    (base) => ({
      ...withIssuer(base, {}, [route('dead', '/dead', { to: 'dead' })]),
      // Port 1 on loopback: nothing listens, so the upstream refuses the connection.
      upstreams: { dead: { url: 'http://127.0.0.1:1' } },
      limits: { pre_auth_per_ip: { points: 100_000, duration_s: 60 } },
      audit: { aggregate_refusals: { after: 20, window_s: 60 } },
      log: { level: 'warn', access: false },
    }),
    { dataDir },
  );
  try {
    client = await addClient(gw);
    expect((await postForm(gw, '/oauth2/token', 'grant_type=client_credentials', { authorization: basicAuth(client.id, 'not-the-secret') })).status).toBe(401);
    const token = await getToken(gw, client);
    expect((await callWith(gw, '/api/x', `Bearer ${token}`)).status).toBe(200);
    expect((await send(gw, { path: '/public/x' })).status).toBe(200);
    expect((await send(gw, { path: '/public' })).status).toBe(200);
    expect((await send(gw, { path: '/publicity' })).status).toBe(404);
    expect((await send(gw, { path: '/dead/x' })).status).toBe(502);
    for (let i = 0; i < FLOOD; i++) expect((await callWith(gw, '/api/x', undefined)).status).toBe(401);
  } finally {
    // A clean stop writes the window's aggregate.
    await gw.stop();
  }
});

function query(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [CLI, 'audit', 'query', '--dir', auditDir, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const jsonLines = (stdout: string): Array<Record<string, unknown>> =>
  stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);

/** Table rows (header first) split on the column gaps. */
const tableRows = (stdout: string): string[][] =>
  stdout
    .trim()
    .split('\n')
    .map((line) => line.split(/\s{2,}/));

describe("issue #22: the operator's questions", () => {
  it("item 6: every refusal for client X includes the token endpoint's invalid_client for it (claimed, not authenticated)", () => {
    const { status, stdout } = query('--client', client.id, '--decision', 'deny', '--json');
    expect(status).toBe(0);
    const records = jsonLines(stdout);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      type: 'decision',
      decision: 'deny',
      code: 'invalid_client',
      subject: client.id,
      client_id: null,
      path: '/oauth2/token',
    });
    // And every record naming it: the refusal, the token issued, the request made with it.
    const all = jsonLines(query('--client', client.id, '--json').stdout).filter((r) => r['type'] === 'decision');
    expect(all.map((r) => r['decision'])).toEqual(['deny', 'allow', 'allow']);
  });

  it('item 7: a deny query includes the aggregated refusals, shown with their count, and a summary line counts both', () => {
    const { status, stdout } = query('--decision', 'deny', '--route', 'api');
    expect(status).toBe(0);
    const rows = tableRows(stdout);
    expect(rows[0]).toEqual(['ts', 'decision', 'count', 'status', 'route', 'method', 'path', 'who', 'code', 'request_id']);
    const aggregate = rows.find((row) => row[9]?.startsWith('last '));
    expect(aggregate?.slice(1, 5)).toEqual(['deny', String(FLOOD - 20), '401', 'api']);
    expect(rows.filter((row) => row[1] === 'deny' && row[2] === '1')).toHaveLength(20);
    expect(rows.at(-1)?.join('  ')).toBe(`0 allowed, ${FLOOD} refused (20 recorded one by one, ${FLOOD - 20} counted in 1 aggregate record(s))`);
    const json = jsonLines(query('--decision', 'deny', '--route', 'api', '--json').stdout);
    expect(json.filter((r) => r['type'] === 'refusals_aggregated').map((r) => r['count'])).toEqual([FLOOD - 20]);
    // An allow query has no aggregate in it.
    expect(jsonLines(query('--decision', 'allow', '--json').stdout).some((r) => r['type'] === 'refusals_aggregated')).toBe(false);
  });

  it('item 8: who called /public — a path prefix by whole segments, not /publicity', () => {
    const { status, stdout } = query('--path', '/public', '--json');
    expect(status).toBe(0);
    const paths = jsonLines(stdout)
      .filter((r) => r['type'] === 'decision')
      .map((r) => r['path']);
    expect(paths).toEqual(['/public/x', '/public']);
    expect(
      jsonLines(query('--path', '/publicity', '--json').stdout)
        .filter((r) => r['type'] === 'decision')
        .map((r) => r['status']),
    ).toEqual([404]);
    expect(query('--path', 'public').status).toBe(64);
  });

  it('item 5: the table shows the status actually sent for an allow (200, and the 502 with its code); --json keeps both records', () => {
    const rows = tableRows(query('--decision', 'allow').stdout);
    const byPath = new Map(rows.map((row) => [row[6], row]));
    expect(byPath.get('/api/x')?.slice(1, 4)).toEqual(['allow', '1', '200']);
    expect(byPath.get('/dead/x')?.[3]).toBe('502');
    expect(byPath.get('/dead/x')?.[8]).toBe('upstream_unavailable');
    const dead = jsonLines(query('--path', '/dead', '--json').stdout);
    expect(dead.map((r) => r['type'])).toEqual(['decision', 'completion']);
    expect(dead[1]).toMatchObject({ request_id: dead[0]?.['request_id'], status: 502, code: 'upstream_unavailable' });
  });
});
