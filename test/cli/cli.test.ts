import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect } from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { request, Agent } from 'undici';
import { SqliteCredentialStore } from '../../src/store/sqlite.js';
import { initDevCertificates, issueServerCertificate } from '../../src/tls/ca.js';

const ROOT = join(import.meta.dirname, '../..');
const CLI = join(ROOT, 'dist/src/cli/main.js');
const work = mkdtempSync(join(tmpdir(), 'gatehouse-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(args: string[], env: NodeJS.ProcessEnv = process.env): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000, env });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Starts `gatehouse serve` and resolves with the port from its "listening" log line. */
async function serve(args: string[]): Promise<{ child: ChildProcess; port: number; lines: string[] }> {
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line; got:\n${lines.join('\n')}`)), 20_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      lines.push(line);
      const parsed = JSON.parse(line) as { msg?: string; port?: number };
      if (parsed.msg === 'gatehouse listening' && parsed.port !== undefined) {
        clearTimeout(timer);
        resolve(parsed.port);
      }
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${lines.join('\n')}`)));
  });
  return { child, port, lines };
}

function writeConfig(name: string, certDir: string, extra = ''): string {
  const file = join(work, name);
  writeFileSync(
    file,
    `server: { host: 127.0.0.1, port: 0 }\n` +
      `tls: { cert: ${certDir}/server.pem, key: ${certDir}/server-key.pem, client_ca: ${certDir}/ca.pem }\n` +
      `routes:\n  - { id: pub, match: { path_prefix: /public, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n` +
      `data_dir: ${join(work, 'data-' + name)}\n${extra}`,
  );
  return file;
}

function serialOf(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca }, () => {
      resolve(socket.getPeerCertificate().serialNumber);
      socket.destroy();
    });
    socket.on('error', reject);
  });
}

describe('gatehouse CLI', () => {
  it('exits 78 with every problem and its path for an invalid config', () => {
    const file = join(work, 'invalid.yaml');
    writeFileSync(file, 'server: { port: 99999, colour: blue }\nroutes: []\n');
    const result = run(['serve', '--config', file]);
    expect(result.status).toBe(78);
    expect(result.stderr).toContain('server.port');
    expect(result.stderr).toContain('colour');
    expect(result.stderr).toContain('tls');
    expect(result.stderr).toContain('routes');
  });

  it('exits 78 for a missing config file and for YAML syntax errors', () => {
    expect(run(['serve', '--config', join(work, 'nope.yaml')]).status).toBe(78);
    const file = join(work, 'syntax.yaml');
    writeFileSync(file, 'server: [\n');
    const result = run(['serve', '--config', file]);
    expect(result.status).toBe(78);
    expect(result.stderr).toMatch(/YAML/);
  });

  it('exits 64 for usage errors (bad flag value, unknown command, unknown option)', () => {
    expect(run(['serve', '--port', 'eighty']).status).toBe(64);
    expect(run(['serve', '--port', '70000']).status).toBe(64);
    expect(run(['frobnicate']).status).toBe(64);
    expect(run(['serve', '--no-such-flag']).status).toBe(64);
  });

  it('exits 78 when a TLS file named by the config does not exist', async () => {
    const file = writeConfig('missing-cert.yaml', join(work, 'no-certs-here'));
    const result = run(['serve', '--config', file]);
    expect(result.status).toBe(78);
    expect(result.stderr).toMatch(/TLS file/);
  });

  it('certs init creates the dev CA with private keys 0600, is idempotent, and refuses a partial set', () => {
    const dir = join(work, 'certs-init');
    const first = run(['certs', 'init', '--dir', dir]);
    expect(first.status).toBe(0);
    for (const key of ['ca-key.pem', 'server-key.pem', 'client-key.pem']) expect(statSync(join(dir, key)).mode & 0o777).toBe(0o600);
    const before = readFileSync(join(dir, 'ca.pem'), 'utf8');
    const second = run(['certs', 'init', '--dir', dir]);
    expect(second.status).toBe(0);
    expect(second.stdout).toMatch(/already present/);
    expect(readFileSync(join(dir, 'ca.pem'), 'utf8')).toBe(before);
    unlinkSync(join(dir, 'client.pem'));
    const partial = run(['certs', 'init', '--dir', dir]);
    expect(partial.status).toBe(1);
    expect(partial.stderr).toMatch(/client\.pem/);
    expect(run(['certs', 'init', '--dir', dir, '--force']).status).toBe(0);
    expect(readFileSync(join(dir, 'ca.pem'), 'utf8')).not.toBe(before);
  });

  it('serve answers /healthz over TLS, reloads the certificate on SIGHUP, and exits 0 on SIGTERM (REL-01, TLS-14)', async () => {
    const certDir = join(work, 'serve-certs');
    const { paths } = await initDevCertificates(certDir);
    const ca = readFileSync(paths.caCert);
    const { child, port } = await serve(['--config', writeConfig('serve.yaml', certDir)]);
    try {
      const agent = new Agent({ connect: { ca, servername: 'localhost' } });
      const res = await request(`https://127.0.0.1:${port}/healthz`, { dispatcher: agent });
      expect(res.statusCode).toBe(200);
      expect(await res.body.json()).toEqual({ status: 'ok' });
      await agent.close();

      const oldSerial = await serialOf(port, ca);
      const next = await issueServerCertificate(
        { certPem: readFileSync(paths.caCert, 'utf8'), keyPem: readFileSync(paths.caKey, 'utf8') },
        { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] },
      );
      writeFileSync(paths.serverCert, next.certPem);
      writeFileSync(paths.serverKey, next.keyPem, { mode: 0o600 });
      child.kill('SIGHUP');
      let newSerial = oldSerial;
      for (let i = 0; i < 50 && newSerial === oldSerial; i++) {
        await new Promise((r) => setTimeout(r, 50));
        newSerial = await serialOf(port, ca);
      }
      expect(newSerial).not.toBe(oldSerial);

      // A broken file on reload keeps the current certificate and the listener up.
      writeFileSync(paths.serverCert, 'not a certificate');
      child.kill('SIGHUP');
      await new Promise((r) => setTimeout(r, 200));
      expect(await serialOf(port, ca)).toBe(newSerial);
    } finally {
      child.kill('SIGTERM');
    }
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
  });

  it('npm start defaults: the example config serves on embedded defaults, creating dev certificates when missing', async () => {
    const data = join(work, 'default-data');
    const { child, port } = await serve(['--port', '0', '--data', data]);
    try {
      const ca = readFileSync(join(ROOT, 'certs/ca.pem'));
      const agent = new Agent({ connect: { ca, servername: 'localhost' } });
      const res = await request(`https://127.0.0.1:${port}/public/hello`, { dispatcher: agent });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
      await agent.close();
      expect(existsSync(join(data, 'audit', 'audit.jsonl'))).toBe(true);
    } finally {
      child.kill('SIGTERM');
    }
    await once(child, 'exit');
  });

  it('refuses to start on a port in use with exit 1 and a clear message', async () => {
    const certDir = join(work, 'busy-certs');
    await initDevCertificates(certDir);
    const first = await serve(['--config', writeConfig('busy.yaml', certDir)]);
    try {
      const result = run(['serve', '--config', writeConfig('busy2.yaml', certDir), '--port', String(first.port)]);
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(/EADDRINUSE/);
    } finally {
      first.child.kill('SIGTERM');
    }
    await once(first.child, 'exit');
  });

  it('serve with the issuer creates master.key (0600) and a signing key; another GATEHOUSE_MASTER_KEY cannot open them: exit 78, nothing changed', async () => {
    const certDir = join(work, 'issuer-certs');
    await initDevCertificates(certDir);
    const config = writeConfig('issuer.yaml', certDir, 'issuer: {}\n');
    const data = join(work, 'data-issuer.yaml');
    const first = await serve(['--config', config]);
    first.child.kill('SIGTERM');
    await once(first.child, 'exit');
    expect(statSync(join(data, 'master.key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(data, 'gatehouse.db')).mode & 0o777).toBe(0o600);
    // What is stored, not the file's bytes: opening and closing a WAL database may checkpoint it into the main file.
    const storedKeys = async (): Promise<string> => {
      const store = SqliteCredentialStore.open(join(data, 'gatehouse.db'));
      try {
        return JSON.stringify(await store.listSigningKeys());
      } finally {
        await store.close();
      }
    };
    const before = await storedKeys();
    const masterKey = readFileSync(join(data, 'master.key'));
    expect(JSON.parse(before)).toHaveLength(1);

    const wrongKey = Buffer.alloc(32, 7).toString('base64url');
    const result = run(['serve', '--config', config], { ...process.env, GATEHOUSE_MASTER_KEY: wrongKey });
    expect(result.status).toBe(78);
    expect(result.stderr).toMatch(/does not decrypt/);
    expect(result.stderr).not.toContain(wrongKey);
    expect(await storedKeys()).toBe(before);
    expect(readFileSync(join(data, 'master.key')).equals(masterKey)).toBe(true);

    const malformed = run(['serve', '--config', config], { ...process.env, GATEHOUSE_MASTER_KEY: 'short' });
    expect(malformed.status).toBe(78);
    expect(malformed.stderr).toMatch(/GATEHOUSE_MASTER_KEY/);
  });
});
