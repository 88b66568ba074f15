// Issue #8 Part D: the allow of a proxied request is handed to the operating system before the upstream sees the request
// (group commit), so `kill -9` of a loaded gateway loses no record of a request an upstream served. A real `gatehouse
// serve` child process under concurrent proxied load is killed with SIGKILL; every request id the upstream received must
// have its allow record, the chain must verify, and a restart must continue it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { checkpointVerifier, readAuditPublicKey } from '../../src/audit/audit-key.js';
import { readRecords } from '../../src/audit/read.js';
import { verifyDirectory } from '../../src/audit/verify.js';
import { initDevCertificates } from '../../src/tls/ca.js';

const CLI = join(import.meta.dirname, '../../dist/src/cli/main.js');
const work = mkdtempSync(join(tmpdir(), 'gatehouse-crash-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function serve(config: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no listening line')), 20_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const parsed = JSON.parse(line) as { msg?: string; port?: number };
      if (parsed.msg === 'gatehouse listening' && parsed.port !== undefined) {
        clearTimeout(timer);
        resolve({ child, port: parsed.port });
      }
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}`)));
  });
}

describe('SIGKILL under load', () => {
  it('every request the upstream received has an allow record, the chain verifies, and a restart continues it', async () => {
    const seen = new Set<string>();
    let gateway: ChildProcess | undefined;
    const upstream = createServer((req, res) => {
      seen.add(String(req.headers['x-request-id']));
      // Killed the moment a request reaches the upstream: its allow must already be in the file, not just queued.
      if (seen.size === 300) gateway?.kill('SIGKILL');
      res.end('ok');
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const certDir = join(work, 'certs');
    const { paths } = await initDevCertificates(certDir);
    const dataDir = join(work, 'data');
    const config = join(work, 'gatehouse.yaml');
    writeFileSync(
      config,
      `server: { host: 127.0.0.1, port: 0 }\n` +
        `tls: { cert: ${paths.serverCert}, key: ${paths.serverKey} }\n` +
        `upstreams: { app: { url: "http://127.0.0.1:${(upstream.address() as AddressInfo).port}" } }\n` +
        `routes:\n  - { id: app, match: { path_prefix: /app, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { proxy: { upstream: app } } }\n` +
        `limits: { pre_auth_per_ip: { points: 1000000, duration_s: 1, block_s: 0 } }\n` +
        `log: { access: false }\naudit: { instance: crash }\ndata_dir: ${dataDir}\n`,
    );
    const { child, port } = await serve(config);
    gateway = child;
    const agent = new Agent({ connect: { ca: readFileSync(paths.caCert), servername: 'localhost' }, connections: 32 });
    let running = true;
    const worker = async (): Promise<void> => {
      while (running) {
        try {
          const res = await request(`https://127.0.0.1:${port}/app/x`, { dispatcher: agent });
          await res.body.dump();
        } catch {
          // The gateway is gone mid-request: expected once it was killed.
        }
      }
    };
    const workers = Array.from({ length: 32 }, worker);
    if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
    running = false;
    await Promise.all(workers);
    await agent.close();
    upstream.close();

    const auditDir = join(dataDir, 'audit');
    const allowed = new Set(
      readRecords(auditDir)
        .filter((r) => r.type === 'decision' && r['decision'] === 'allow')
        .map((r) => String(r['request_id'])),
    );
    expect(seen.size).toBeGreaterThanOrEqual(300);
    const unrecorded = [...seen].filter((id) => !allowed.has(id));
    expect(unrecorded).toEqual([]);
    expect(verifyDirectory(auditDir)).toMatchObject({ ok: true, chains: [{ instance: 'crash', boots: 1 }] });

    // The lock of the killed process is taken over; the chain goes on from its last complete record.
    const restarted = await serve(config);
    // A second gateway on the same chain is refused at start, with a message that says what to change.
    const second = spawnSync(process.execPath, [CLI, 'serve', '--config', config], { encoding: 'utf8', timeout: 20_000 });
    expect(second.status).toBe(1);
    expect(second.stderr).toMatch(/audit chain "crash" in .* is being written by process \d+; give each gateway its own audit.instance/);
    // SIGTERM as soon as the listening line is out (a regression: it used to come before the handler was installed,
    // killing the process without closing the log) drains, closes the segment and releases the chain's lock.
    restarted.child.kill('SIGTERM');
    const [code] = (await once(restarted.child, 'exit')) as [number | null];
    expect(code).toBe(0);
    expect(readdirSync(auditDir)).not.toContain('crash.lock');
    const report = verifyDirectory(auditDir);
    const listing = readdirSync(auditDir).map(
      (name) => `${name}: ${statSync(join(auditDir, name)).size} ${readFileSync(join(auditDir, name), 'utf8').slice(-400)}`,
    );
    expect(report, JSON.stringify({ report, listing })).toMatchObject({ ok: true, chains: [{ instance: 'crash', boots: 2, segments: 2 }] });
    expect(
      readRecords(auditDir)
        .filter((r) => r.type === 'segment_start')
        .map((r) => r['reason']),
    ).toEqual(['start', 'restart']);
    // Each boot is on record with the hash of the configuration that decided; the clean stop too, the killed run not.
    const lifecycle = readRecords(auditDir).filter((r) => r.type.startsWith('gateway_'));
    expect(lifecycle.map((r) => r.type)).toEqual(['gateway_start', 'gateway_start', 'gateway_stop']);
    expect(lifecycle[0]?.['config_sha256']).toMatch(/^[0-9a-f]{64}$/);
    expect(lifecycle[1]?.['config_sha256']).toBe(lifecycle[0]?.['config_sha256']);
    // serve signs checkpoints with the audit key in data_dir (the clean stop leaves one), and they verify with its public key.
    expect(readRecords(auditDir).at(-1)).toMatchObject({ type: 'checkpoint' });
    const key = checkpointVerifier(readAuditPublicKey(join(dataDir, 'audit-key.json')).pem);
    // The restart signs over the killed run's unsigned tail at once, so the chain passes the configured cadence (#22).
    const records = readRecords(auditDir);
    const restart = records.findIndex((r) => r.type === 'segment_start' && r['reason'] === 'restart');
    expect(records[restart + 1]).toMatchObject({ type: 'checkpoint', covers_seq: records[restart]?.seq });
    expect(verifyDirectory(auditDir, { key, cadence: { everyRecords: 1000, intervalS: 60 } })).toMatchObject({ ok: true });
  }, 60_000);
});
