// Issue #22 item 10: every TLS file problem at start-up is one line naming the file and the problem, exit 78 — never an
// uncaught exception with a stack — and a start that fails (a bad certificate, a port in use) leaves no chain lock behind.
// The built CLI, real files.
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../support/cli.js';
import { initDevCertificates } from '../../src/tls/ca.js';

const work = mkdtempSync(join(tmpdir(), 'gatehouse-tls-files-'));
const certs = join(work, 'certs');
afterAll(() => rmSync(work, { recursive: true, force: true }));
beforeAll(async () => {
  await initDevCertificates(certs);
});

interface Setup {
  readonly config: string;
  readonly data: string;
  readonly dir: string;
}

/** A deployment of its own: a copy of the dev certificates (`change` spoils them) and a config naming them. */
function deployment(name: string, change: (dir: string) => void = () => undefined, extra = ''): Setup {
  const dir = join(work, name);
  const certDir = join(dir, 'certs');
  cpSync(certs, certDir, { recursive: true });
  change(certDir);
  const data = join(dir, 'data');
  const config = join(dir, 'gatehouse.yaml');
  writeFileSync(
    config,
    `server: { host: 127.0.0.1, port: 0 }\n` +
      `tls: { cert: ${certDir}/server.pem, key: ${certDir}/server-key.pem, client_ca: ${certDir}/ca.pem }\n` +
      `routes:\n  - { id: pub, match: { path_prefix: /public, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n` +
      `data_dir: ${data}\n${extra}`,
  );
  return { config, data, dir };
}

function serve(setup: Setup, withoutDacOverride = false): { status: number | null; stderr: string } {
  // Root reads any file whatever its mode; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH it meets file permissions like
  // anyone else (and still owns the repository and the test's files).
  const prefix = withoutDacOverride ? ['setpriv', '--bounding-set=-dac_override,-dac_read_search'] : [];
  const command = [...prefix, process.execPath, CLI, 'serve', '--config', setup.config];
  const result = spawnSync(command[0] as string, command.slice(1), { encoding: 'utf8', timeout: 20_000 });
  return { status: result.status, stderr: result.stderr };
}

/** One line naming the file and the problem: no stack, no "uncaught". */
function expectOneLine(stderr: string, pattern: RegExp): void {
  const lines = stderr.trim().split('\n');
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(stderr).not.toMatch(/\n\s+at |uncaught|unhandled/i);
}

const locks = (data: string): string[] => (existsSync(join(data, 'audit')) ? readdirSync(join(data, 'audit')).filter((n) => n.includes('.lock')) : []);

describe('issue #22 item 10: TLS file problems at start-up', () => {
  const cases: Array<[string, (dir: string) => void, RegExp]> = [
    [
      'a certificate file that is not PEM',
      (d) => writeFileSync(join(d, 'server.pem'), 'not a certificate\n'),
      /^gatehouse: TLS file tls\.cert .*server\.pem: holds no PEM certificate/,
    ],
    [
      'a PEM certificate whose contents are not a certificate',
      (d) => writeFileSync(join(d, 'server.pem'), '-----BEGIN CERTIFICATE-----\nAAAAbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n'),
      /^gatehouse: TLS file tls\.cert .*server\.pem: certificate 1 of 1 is not a valid X\.509 certificate$/,
    ],
    [
      'a malformed private key',
      (d) => writeFileSync(join(d, 'server-key.pem'), '-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n'),
      /^gatehouse: TLS file tls\.key .*server-key\.pem: is not a usable unencrypted PEM private key/,
    ],
    [
      'a key that belongs to another certificate',
      (d) => copyFileSync(join(d, 'client-key.pem'), join(d, 'server-key.pem')),
      /^gatehouse: TLS file tls\.key .*server-key\.pem: is not the private key of the certificate in .*server\.pem$/,
    ],
    [
      'a client CA file that is a directory',
      (d) => {
        rmSync(join(d, 'ca.pem'));
        mkdirSync(join(d, 'ca.pem'));
      },
      /^gatehouse: TLS file tls\.client_ca .*ca\.pem: cannot read the file: is a directory, not a file \(EISDIR\)$/,
    ],
    [
      'a missing certificate file',
      (d) => rmSync(join(d, 'server.pem')),
      /^gatehouse: TLS file tls\.cert .*server\.pem: cannot read the file: no such file \(ENOENT\)$/,
    ],
  ];
  for (const [label, spoil, message] of cases) {
    it(`${label}: one line naming it, exit 78, nothing created`, () => {
      const setup = deployment(label.replace(/\W+/g, '-'), spoil);
      const { status, stderr } = serve(setup);
      expect(status).toBe(78);
      expectOneLine(stderr, message);
      // Checked before the store, the master key and the audit chain are touched.
      expect(existsSync(setup.data)).toBe(false);
    });
  }

  it('an unreadable certificate directory (EACCES): one line, exit 78, no chain lock left', () => {
    const setup = deployment('unreadable');
    const certDir = join(setup.dir, 'certs');
    chmodSync(certDir, 0o000);
    try {
      const { status, stderr } = serve(setup, process.getuid?.() === 0);
      expect(status).toBe(78);
      expectOneLine(stderr, /^gatehouse: TLS file tls\.cert .*server\.pem: cannot read the file: permission denied \(EACCES\)$/);
      expect(locks(setup.data)).toEqual([]);
    } finally {
      chmodSync(certDir, 0o700);
    }
  });

  it('a port in use: exit 1 naming it, and the audit chain was closed (no lock left, a restart needs no takeover)', async () => {
    const holder = createServer();
    holder.listen(0, '127.0.0.1');
    await once(holder, 'listening');
    const port = (holder.address() as AddressInfo).port;
    try {
      const setup = deployment('port-in-use');
      writeFileSync(setup.config, readFileSync(setup.config, 'utf8').replace('port: 0', `port: ${port}`));
      const { status, stderr } = serve(setup);
      expect(status).toBe(1);
      expect(stderr).toMatch(/cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE/);
      // The chain was opened (the audit directory exists) and closed again.
      expect(existsSync(join(setup.data, 'audit'))).toBe(true);
      expect(locks(setup.data)).toEqual([]);
    } finally {
      holder.close();
    }
  });
});
