import { readRecords } from '../../src/audit/read.js';
import { spawn, spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { request, Agent } from 'undici';
import { SqliteCredentialStore } from '../../src/store/sqlite.js';
import { runCli, serveCli, type ServeProcess } from '../support/cli.js';
import { initDevCertificates, issueServerCertificate } from '../../src/tls/ca.js';

const ROOT = join(import.meta.dirname, '../..');
const CLI = join(ROOT, 'dist/src/cli/main.js');
const work = mkdtempSync(join(tmpdir(), 'gatehouse-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const run = runCli;

/** Starts `gatehouse serve` and resolves with the port from its "listening" log line. */
const serve = (args: string[]): Promise<ServeProcess> => serveCli(args);

function writeConfig(name: string, certDir: string, extra = ''): string {
  const file = join(work, name);
  writeFileSync(
    file,
    `server: { host: 127.0.0.1, port: 0 }\n` +
      `tls: { cert: ${certDir}/server.pem, key: ${certDir}/server-key.pem, client_ca: ${certDir}/ca.pem }\n` +
      `routes:\n  - { id: pub, match: { path_prefix: /public, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n` +
      `data_dir: ${join(work, `data-${name}`)}\n${extra}`,
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

  it('config check validates as serve would, without serving: 0 and a summary, or 78 with every problem (TLS files too)', () => {
    const example = run(['config', 'check', '--json']);
    expect(example.status, example.stderr).toBe(0);
    expect(JSON.parse(example.stdout)).toMatchObject({ valid: true, routes: 4, issuer: true, admin: true, store: 'sqlite' });
    const invalid = join(work, 'check-invalid.yaml');
    writeFileSync(invalid, 'server: { port: 99999 }\nroutes: []\n');
    const refused = run(['config', 'check', invalid]);
    expect(refused.status).toBe(78);
    expect(refused.stderr).toContain('server.port');
    expect(refused.stderr).toContain('routes');
    const missingTls = join(work, 'check-tls.yaml');
    writeFileSync(
      missingTls,
      `tls: { cert: ${join(work, 'no-cert.pem')}, key: ${join(work, 'no-key.pem')} }\n` +
        'routes:\n  - { id: p, match: { path_prefix: /p, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n',
    );
    const tls = run(['config', 'check', missingTls, '--json']);
    expect(tls.status).toBe(78);
    expect(JSON.parse(tls.stdout)).toMatchObject({ valid: false, problems: [expect.stringMatching(/^tls\.cert .*no such file/)] });
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

  it('serve reloads its routes on SIGHUP; a file it cannot use, or one that changes what needs a restart, is refused and recorded', async () => {
    const certDir = join(work, 'reload-certs');
    const { paths } = await initDevCertificates(certDir);
    const agent = new Agent({ connect: { ca: readFileSync(paths.caCert), servername: 'localhost' } });
    const file = writeConfig('reload.yaml', certDir);
    const server = await serve(['--config', file]);
    const status = async (path: string): Promise<number> => {
      const res = await request(`https://127.0.0.1:${server.port}${path}`, { dispatcher: agent });
      await res.body.dump();
      return res.statusCode;
    };
    const logged = (msg: string): number => server.lines.filter((line) => (JSON.parse(line) as { msg?: string }).msg === msg).length;
    const waitFor = async (msg: string, count: number): Promise<void> => {
      for (let i = 0; i < 100 && logged(msg) < count; i++) await new Promise((r) => setTimeout(r, 50));
      expect(logged(msg)).toBe(count);
    };
    const extra = '  - { id: extra, match: { path_prefix: /extra, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n';
    try {
      expect(await status('/extra/x')).toBe(404);
      writeFileSync(file, readFileSync(file, 'utf8').replace('handler: { service: echo } }\n', `handler: { service: echo } }\n${extra}`));
      server.child.kill('SIGHUP');
      await waitFor('configuration reloaded', 1);
      expect(await status('/extra/x')).toBe(200);
      const good = readFileSync(file, 'utf8');

      writeFileSync(file, 'routes: [ unclosed\n');
      server.child.kill('SIGHUP');
      await waitFor('configuration not reloaded; the configuration in force stays', 1);
      writeFileSync(file, `${good}limits: { max_connections: 5 }\n`);
      server.child.kill('SIGHUP');
      await waitFor('configuration not reloaded; the configuration in force stays', 2);
      expect(await status('/extra/x')).toBe(200);
      expect(await status('/public/x')).toBe(200);
    } finally {
      await agent.close();
      await server.stop();
    }
    expect(server.child.exitCode).toBe(0);
    const records = readRecords(join(work, 'data-reload.yaml', 'audit'));
    expect(records.filter((r) => r.type === 'config_reloaded')).toHaveLength(1);
    expect(records.filter((r) => r.type === 'config_reload_refused').map((r) => r['problems'])).toEqual([
      expect.stringContaining('YAML'),
      'limits.max_connections: changed, but takes effect only after a restart',
    ]);
  });

  it('npm start defaults: the example config serves on embedded defaults, creating dev certificates when missing', async () => {
    const data = join(work, 'default-data');
    const { child, port, lines } = await serve(['--port', '0', '--admin-port', '0', '--data', data]);
    try {
      const ca = readFileSync(join(ROOT, 'certs/ca.pem'));
      const agent = new Agent({ connect: { ca, servername: 'localhost' } });
      const res = await request(`https://127.0.0.1:${port}/public/hello`, { dispatcher: agent });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
      await agent.close();
      // The admin listener is on, with the development client certificate as its admin: /metrics at once.
      const adminLine = lines.map((line) => JSON.parse(line) as { msg?: string; port?: number }).find((line) => line.msg === 'admin listener');
      const admin = new Agent({
        connect: { ca, servername: 'localhost', cert: readFileSync(join(ROOT, 'certs/client.pem')), key: readFileSync(join(ROOT, 'certs/client-key.pem')) },
      });
      const metrics = await request(`https://127.0.0.1:${adminLine?.port ?? 0}/metrics`, { dispatcher: admin });
      expect(metrics.statusCode).toBe(200);
      expect(await metrics.body.text()).toMatch(/^gatehouse_requests_total\{route="public-echo",decision="allow",stage="handler",code=""\} 1$/m);
      await admin.close();
      // The decision is in this host's audit chain.
      expect(readRecords(join(data, 'audit')).some((r) => r.type === 'decision' && r['route'] === 'public-echo')).toBe(true);
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
      // The admin listener's port taken: the message names that port, not the public one, and nothing stays bound.
      const admin = { subjects: ['spiffe://gatehouse.local/dev-client'], port: first.port };
      const adminBusy = run(['serve', '--config', writeConfig('busy3.yaml', certDir, `admin: ${JSON.stringify(admin)}\n`)]);
      expect(adminBusy.status).toBe(1);
      expect(adminBusy.stderr).toBe(`gatehouse: cannot listen on 127.0.0.1:${first.port} (EADDRINUSE: address already in use by another process)\n`);
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

/** A stack trace line as Node prints it for an uncaught error, or as the crash log's "stack" field holds it. */
const STACK = /\n\s+at |uncaught exception/;

/** Runs the CLI with a stdout whose reader is gone before the first write: every write to it fails with EPIPE. */
async function runWithClosedStdout(args: string[]): Promise<{ status: number | null; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.destroy();
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [status] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { status, stderr };
}

// Answers every query from a loopback address: NXDOMAIN, or SERVFAIL for a name whose first label is "servfail".
// It stops by itself, so a killed test cannot leave it behind holding the port.
const FAKE_DNS = `
import dgram from 'node:dgram';
const socket = dgram.createSocket('udp4');
socket.on('message', (query, peer) => {
  const label = query.subarray(13, 13 + query[12]).toString('latin1');
  process.stdout.write('query ' + label + '\\n');
  const answer = Buffer.from(query);
  answer[2] = 0x81;
  answer[3] = label === 'servfail' ? 0x82 : 0x83;
  answer.fill(0, 6, 12);
  socket.send(answer, peer.port, peer.address);
});
socket.bind(53, process.argv[2], () => process.stdout.write('ready\\n'));
setTimeout(() => process.exit(0), 30_000);
`;

// In a private mount namespace, /etc/resolv.conf names only the fake server: no query can leave 127.0.0.0/8. The
// script refuses to run the CLI unless that is so, and unless the fake server is listening.
const DNS_SCRIPT = `set -eu
dir=$1; nameserver=$2; node=$3; cli=$4; config=$5
mount --bind "$dir/resolv.conf" /etc/resolv.conf
[ "$(cat /etc/resolv.conf)" = "nameserver $nameserver" ]
# The log exists before the server starts: the background job's redirection may not have run when the wait begins.
: > "$dir/dns.log"
"$node" "$dir/fake-dns.mjs" "$nameserver" >> "$dir/dns.log" &
dns=$!
tries=0
until grep -q ready "$dir/dns.log"; do tries=$((tries + 1)); [ "$tries" -lt 600 ] || { kill "$dns"; exit 90; }; sleep 0.05; done
set +e
"$node" "$cli" serve --config "$config" --host no-such-host.invalid --port 0 > "$dir/nx.out" 2> "$dir/nx.err"; echo $? > "$dir/nx.status"
"$node" "$cli" serve --config "$config" --host servfail.invalid --port 0 > "$dir/again.out" 2> "$dir/again.err"; echo $? > "$dir/again.status"
kill "$dns"
`;

describe('gatehouse CLI: listen failures, overrides, output, version, directories, help', () => {
  let certDir: string | undefined;
  const certs = async (): Promise<string> => {
    if (certDir === undefined) {
      certDir = join(work, 'defect-certs');
      await initDevCertificates(certDir);
    }
    return certDir;
  };

  it('an address not on this machine (EADDRNOTAVAIL) ends with one line and exit 1, not a crash', async () => {
    // 192.0.2.1 is TEST-NET-1: binding is a local syscall, no packet is sent.
    const result = run(['serve', '--config', writeConfig('addr-not-avail.yaml', await certs()), '--host', '192.0.2.1', '--port', '0']);
    expect(result.stderr).toBe('gatehouse: cannot listen on 192.0.2.1:0 (EADDRNOTAVAIL: address not available on this machine)\n');
    expect(result.stdout).not.toMatch(STACK);
    expect(result.status).toBe(1);
  });

  it('an IPv6 link-local address without its interface is explained, not a crash', async () => {
    const result = run(['serve', '--config', writeConfig('link-local.yaml', await certs()), '--host', 'fe80::1', '--port', '0']);
    // EINVAL on Linux with IPv6; a machine without IPv6 answers EAFNOSUPPORT or EADDRNOTAVAIL instead.
    expect(result.stderr).toMatch(/^gatehouse: cannot listen on \[fe80::1\]:0 \((EINVAL|EAFNOSUPPORT|EADDRNOTAVAIL): [^\n]+\)\n$/);
    expect(result.stdout).not.toMatch(STACK);
    expect(result.status).toBe(1);
  });

  it.skipIf(process.getuid?.() !== 0)(
    'an unresolvable host name (ENOTFOUND, EAI_AGAIN) ends with one line and exit 1, resolved only by a loopback fake DNS',
    async () => {
      const dir = mkdtempSync(join(work, 'dns-'));
      // A fresh loopback address per run: another run (or a leftover server) on 127.0.0.77:53 cannot get in the way.
      const nameserver = `127.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`;
      writeFileSync(join(dir, 'resolv.conf'), `nameserver ${nameserver}\n`);
      writeFileSync(join(dir, 'fake-dns.mjs'), FAKE_DNS);
      const config = writeConfig('dns.yaml', await certs());
      const script = spawnSync('unshare', ['--mount', 'sh', '-c', DNS_SCRIPT, 'dns-test', dir, nameserver, process.execPath, CLI, config], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect(script.stderr).toBe('');
      expect(script.status).toBe(0);
      const read = (name: string): string => readFileSync(join(dir, name), 'utf8');
      // The names really were asked of the fake server.
      expect(read('dns.log')).toMatch(/query no-such-host\n[\s\S]*query servfail\n/);
      expect(read('nx.err')).toBe('gatehouse: cannot listen on no-such-host.invalid:0 (ENOTFOUND: cannot resolve the host name)\n');
      expect(read('nx.status')).toBe('1\n');
      expect(read('again.err')).toMatch(/^gatehouse: cannot listen on servfail\.invalid:0 \(EAI_AGAIN: cannot resolve the host name[^\n]*\)\n$/);
      expect(read('again.status')).toBe('1\n');
      expect(read('nx.out') + read('again.out')).not.toMatch(STACK);
    },
  );

  it('the config file must be valid on its own: --port does not hide a bad server.port, nor --host a bad server.host', async () => {
    const dir = await certs();
    const badPort = writeConfig('bad-port.yaml', dir);
    writeFileSync(badPort, readFileSync(badPort, 'utf8').replace('port: 0', 'port: "eighty"'));
    const port = run(['serve', '--config', badPort, '--port', '0']);
    expect(port.status).toBe(78);
    expect(port.stderr).toMatch(/server\.port: /);
    const badHost = writeConfig('bad-host.yaml', dir);
    writeFileSync(badHost, readFileSync(badHost, 'utf8').replace('host: 127.0.0.1', 'host: ""'));
    const host = run(['serve', '--config', badHost, '--host', '127.0.0.1']);
    expect(host.status).toBe(78);
    expect(host.stderr).toMatch(/server\.host: /);
  });

  it('a closed stdout (EPIPE) ends every kind of command quietly with exit 1', async () => {
    const dir = await certs();
    const config = writeConfig('epipe.yaml', dir, 'issuer: {}\n');
    // The first start creates the credential store that the admin commands work on.
    const first = await serve(['--config', config]);
    first.child.kill('SIGTERM');
    await once(first.child, 'exit');
    for (const name of ['one', 'two', 'three']) expect(run(['clients', 'add', name, '--scope', 'read', '--config', config]).status).toBe(0);
    const runs = [['--help'], ['--version'], ['clients', 'list', '--json', '--config', config], ['certs', 'init', '--dir', join(work, 'epipe-certs')]];
    for (const args of runs) {
      const result = await runWithClosedStdout(args);
      // Quietly: no stack trace, not even a line — a reader that left needs no message — but not a success either.
      expect(result.stderr, args.join(' ')).toBe('');
      expect(result.status, args.join(' ')).toBe(1);
    }
    // serve logs to stdout: it drains and stops instead of running on without a log.
    const served = await runWithClosedStdout(['serve', '--config', writeConfig('epipe-serve.yaml', dir)]);
    expect(served.stderr).toBe('gatehouse: log output could not be written (EPIPE: the reading end of the pipe was closed); draining and stopping\n');
    expect(served.status).toBe(1);
  });

  it('--version and -V print the version in package.json', () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const result = run([flag]);
      expect(result.stdout).toBe(`${version}\n`);
      expect(result.status).toBe(0);
    }
  });

  it('certs init under /proc (where recursive mkdir spins forever) fails at once with the directory named', () => {
    const started = Date.now();
    // spawnSync's timeout kills a regression instead of hanging the suite.
    const result = spawnSync(process.execPath, [CLI, 'certs', 'init', '--dir', '/proc/gatehouse-test/certs'], { encoding: 'utf8', timeout: 15_000 });
    expect(result.signal).toBeNull();
    expect(result.stderr).toMatch(/^gatehouse: cannot create directory \/proc\/gatehouse-test\/certs: [^\n]+\n$/);
    expect(result.status).toBe(1);
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it('--help of serve, certs init and the program lists what each does and its exit codes', () => {
    const serveHelp = run(['serve', '--help']);
    expect(serveHelp.status).toBe(0);
    expect(serveHelp.stdout).toMatch(/run the gateway/);
    expect(serveHelp.stdout).toMatch(/--host <address>/);
    const codes = serveHelp.stdout.slice(serveHelp.stdout.indexOf('Exit codes:')).replace(/\s+/g, ' ');
    for (const code of ['0 stopped', '1 failure', '64 usage', '70 internal error', '78 configuration']) expect(codes).toContain(code);
    const certsHelp = run(['certs', 'init', '--help']).stdout.replace(/\s+/g, ' ');
    for (const code of ['Exit codes: 0 created', '1 failure', '64 usage']) expect(certsHelp).toContain(code);
    expect(certsHelp).not.toMatch(/\b(70|78) /);
    const programHelp = run(['--help']).stdout.replace(/\s+/g, ' ');
    expect(programHelp).toMatch(/Exit codes: 0 ok; 1 failure/);
    expect(programHelp).toMatch(/-V, --version/);
  });
});
