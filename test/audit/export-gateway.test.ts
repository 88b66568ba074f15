// Part E: a gateway exporting its checkpoints to an HTTPS collector with a pinned CA, as configured; what the collector
// received is what `verify --checkpoints` needs; and the export settings are refused when they cannot be right.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { buildConfig, ConfigError } from '../../src/config/load.js';
import { baseConfig, startGateway, testCertificates } from '../support/harness.js';

const CLI = join(import.meta.dirname, '../../dist/src/cli/main.js');
const root = mkdtempSync(join(tmpdir(), 'gatehouse-export-gw-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('checkpoint export to HTTPS', () => {
  it('every checkpoint reaches the collector, in order; saved as it arrived, it verifies the chain', async () => {
    const certs = await testCertificates();
    const received: string[] = [];
    const instances = new Set<string>();
    const collector: Server = createServer({ cert: readFileSync(certs.paths.serverCert), key: readFileSync(certs.paths.serverKey) }, (req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => (body += chunk));
      req.on('end', () => {
        instances.add(String(req.headers['x-gatehouse-instance']));
        received.push(body);
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
    const { port } = collector.address() as AddressInfo;
    const dataDir = join(root, 'gw');
    const gw = await startGateway(
      (base) => ({
        ...base,
        audit: {
          instance: 'edge-1',
          checkpoint_every_records: 5,
          checkpoint_export_url: `https://localhost:${port}/checkpoints`,
          checkpoint_export_ca: certs.paths.caCert,
        },
        log: { level: 'warn', access: false },
      }),
      { dataDir },
    );
    try {
      const agent = gw.agent();
      for (let i = 0; i < 12; i++) await (await request(`${gw.origin}/public/${i}`, { dispatcher: agent })).body.dump();
    } finally {
      await gw.stop();
      collector.close();
    }
    const exported = join(root, 'collected');
    mkdirSync(exported);
    writeFileSync(join(exported, 'edge-1.checkpoints.jsonl'), received.join(''));
    const lines = received
      .join('')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { type: string; seq: number });
    expect(lines.length).toBeGreaterThanOrEqual(3);
    expect(lines.every((line) => line.type === 'checkpoint')).toBe(true);
    expect(lines.map((line) => line.seq)).toEqual([...lines.map((line) => line.seq)].sort((a, b) => a - b));
    expect([...instances]).toEqual(['edge-1']);
    const verified = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--dir', join(dataDir, 'audit'), '--checkpoints', exported, '--json'], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(verified.status, verified.stdout).toBe(0);
    expect(verified.stdout).toMatch(/exported checkpoint\(s\) in .*, all in the chain/);
  });

  it('refuses an http URL, a URL with credentials, a URL without its CA, and half a client certificate', async () => {
    const certs = await testCertificates();
    const problems = (audit: Record<string, unknown>): readonly string[] => {
      try {
        buildConfig({ ...baseConfig(certs), audit }, root);
      } catch (error) {
        if (error instanceof ConfigError) return error.problems;
        throw error;
      }
      return [];
    };
    expect(problems({ checkpoint_export_url: 'http://collector.example/c', checkpoint_export_ca: 'ca.pem' }).join('\n')).toMatch(
      /checkpoint_export_url: must be an https:\/\/ URL/,
    );
    expect(problems({ checkpoint_export_url: 'https://u:p@collector.example/c', checkpoint_export_ca: 'ca.pem' }).join('\n')).toMatch(
      /must not carry a user name or password/,
    );
    expect(problems({ checkpoint_export_url: 'https://collector.example/c' }).join('\n')).toMatch(/checkpoint_export_ca: required with checkpoint_export_url/);
    expect(problems({ checkpoint_export_ca: 'ca.pem' }).join('\n')).toMatch(/need checkpoint_export_url/);
    expect(
      problems({ checkpoint_export_url: 'https://collector.example/c', checkpoint_export_ca: 'ca.pem', checkpoint_export_client_cert: 'c.pem' }).join('\n'),
    ).toMatch(/go together/);
  });

  it('a CA file that cannot be read stops the start with a message naming the setting', async () => {
    await expect(
      startGateway((base) => ({ ...base, audit: { checkpoint_export_url: 'https://localhost:1/c', checkpoint_export_ca: join(root, 'missing-ca.pem') } }), {
        dataDir: join(root, 'missing'),
      }),
    ).rejects.toThrow(/audit\.checkpoint_export_ca: cannot read .*missing-ca\.pem/);
  });
});
