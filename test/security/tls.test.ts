// TLS listener hardening (SECURITY-MATRIX D): protocol versions, cipher suites, groups, renegotiation, HSTS on every response,
// ALPN and cleartext refusal, certificate hot-swap and session resumption — all over real sockets against a running gateway.
import { route } from '../support/routes.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closedPort } from '../support/harness.js';
import { execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect, createServer as netCreateServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext, connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import { request } from 'undici';
import type { ConfigInput } from '../../src/config/schema.js';
import { issueServerCertificate, type CertificateAndKey } from '../../src/tls/ca.js';
import {
  h2Request,
  h2Session,
  problemCode,
  rawHttp1,
  removeDir,
  startGateway,
  startUpstream,
  testCertificates,
  tlsOptions,
  type TestCertificates,
  type TestGateway,
  type TestUpstream,
} from '../support/harness.js';

const execFileAsync = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The suites Mozilla "intermediate" allows for TLS 1.2, by server key type (TLS-02). */
const ECDSA_AEAD = ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305'];
const RSA_AEAD = ['ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-RSA-CHACHA20-POLY1305'];

/** A broad list of OpenSSL TLS 1.2 suite names: the six allowed ones plus CBC, RSA key exchange, DHE, CCM, ARIA, Camellia, 3DES, RC4, NULL, anonymous, PSK, SRP. */
const TLS12_SUITES = [
  ...ECDSA_AEAD,
  ...RSA_AEAD,
  'ECDHE-ECDSA-AES128-SHA256',
  'ECDHE-ECDSA-AES256-SHA384',
  'ECDHE-ECDSA-AES128-SHA',
  'ECDHE-ECDSA-AES256-SHA',
  'ECDHE-RSA-AES128-SHA256',
  'ECDHE-RSA-AES256-SHA384',
  'ECDHE-RSA-AES128-SHA',
  'ECDHE-RSA-AES256-SHA',
  'ECDHE-ECDSA-AES128-CCM',
  'ECDHE-ECDSA-AES256-CCM',
  'ECDHE-ECDSA-AES128-CCM8',
  'ECDHE-ECDSA-AES256-CCM8',
  'ECDHE-ECDSA-ARIA128-GCM-SHA256',
  'ECDHE-ECDSA-ARIA256-GCM-SHA384',
  'ECDHE-ARIA128-GCM-SHA256',
  'ECDHE-ARIA256-GCM-SHA384',
  'ECDHE-ECDSA-CAMELLIA128-SHA256',
  'ECDHE-ECDSA-CAMELLIA256-SHA384',
  'ECDHE-RSA-CAMELLIA128-SHA256',
  'ECDHE-RSA-CAMELLIA256-SHA384',
  'ECDHE-ECDSA-NULL-SHA',
  'ECDHE-RSA-NULL-SHA',
  'DHE-RSA-AES128-GCM-SHA256',
  'DHE-RSA-AES256-GCM-SHA384',
  'DHE-RSA-CHACHA20-POLY1305',
  'DHE-RSA-AES128-SHA256',
  'DHE-RSA-AES256-SHA256',
  'DHE-RSA-AES128-SHA',
  'DHE-RSA-AES256-SHA',
  'DHE-RSA-AES128-CCM',
  'DHE-RSA-AES256-CCM',
  'DHE-RSA-ARIA128-GCM-SHA256',
  'DHE-RSA-CAMELLIA128-SHA',
  'DHE-DSS-AES128-GCM-SHA256',
  'DHE-DSS-AES128-SHA',
  'AES128-GCM-SHA256',
  'AES256-GCM-SHA384',
  'AES128-SHA256',
  'AES256-SHA256',
  'AES128-SHA',
  'AES256-SHA',
  'AES128-CCM',
  'AES256-CCM',
  'AES128-CCM8',
  'ARIA128-GCM-SHA256',
  'ARIA256-GCM-SHA384',
  'CAMELLIA128-SHA',
  'CAMELLIA256-SHA256',
  'NULL-SHA256',
  'NULL-SHA',
  'NULL-MD5',
  'DES-CBC3-SHA',
  'ECDHE-ECDSA-DES-CBC3-SHA',
  'ECDHE-RSA-DES-CBC3-SHA',
  'EDH-RSA-DES-CBC3-SHA',
  'RC4-SHA',
  'ECDHE-ECDSA-RC4-SHA',
  'SEED-SHA',
  'IDEA-CBC-SHA',
  'AECDH-AES128-SHA',
  'AECDH-NULL-SHA',
  'ADH-AES128-GCM-SHA256',
  'ADH-AES256-SHA',
  'PSK-AES128-GCM-SHA256',
  'ECDHE-PSK-CHACHA20-POLY1305',
  'RSA-PSK-AES128-GCM-SHA256',
  'DHE-PSK-AES128-GCM-SHA256',
  'SRP-AES-128-CBC-SHA',
];

/** Weak suites this Node build can offer; each must be probed and refused, or the enumeration proves nothing. */
const MUST_PROBE = [
  'ECDHE-ECDSA-AES128-SHA',
  'ECDHE-ECDSA-AES256-SHA384',
  'ECDHE-RSA-AES128-SHA',
  'ECDHE-ECDSA-AES128-CCM',
  'ECDHE-ECDSA-ARIA128-GCM-SHA256',
  'ECDHE-ECDSA-CAMELLIA128-SHA256',
  'ECDHE-ECDSA-NULL-SHA',
  'DHE-RSA-AES128-GCM-SHA256',
  'AES128-GCM-SHA256',
  'AES128-SHA',
];

type Handshake =
  | {
      readonly ok: true;
      readonly protocol: string | null;
      readonly cipher: string;
      readonly alpn: string | false;
      readonly group: string | undefined;
      readonly serial: string;
    }
  | { readonly ok: false; readonly code: string; readonly serverAlert: boolean };

/** Offers exactly what `extra` says, waits for the handshake to finish or fail, and closes. */
function handshake(port: number, certs: TestCertificates, extra: ConnectionOptions): Promise<Handshake> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ port, ...tlsOptions(certs), ...extra });
    socket.once('secureConnect', () => {
      resolve({
        ok: true,
        protocol: socket.getProtocol(),
        cipher: socket.getCipher().name,
        alpn: socket.alpnProtocol ?? false,
        group: (socket.getEphemeralKeyInfo() as { name?: string }).name,
        serial: socket.getPeerCertificate().serialNumber,
      });
      socket.destroy();
    });
    socket.once('error', (error: Error & { code?: string }) => {
      const code = error.code ?? error.message;
      // An ERR_SSL_..._ALERT_... code means the server refused with a TLS alert, not that the client gave up on its own.
      resolve({ ok: false, code, serverAlert: /ALERT/.test(code) });
      socket.destroy();
    });
    socket.once('close', () => resolve({ ok: false, code: 'closed', serverAlert: false }));
  });
}

/** True when this Node build's OpenSSL can put the suite in a ClientHello (3DES/RC4/SEED/IDEA are compiled out). */
function clientCanOffer(cipher: string): boolean {
  try {
    createSecureContext({ ciphers: `${cipher}:@SECLEVEL=0` });
    return true;
  } catch {
    return false;
  }
}

interface Enumeration {
  readonly accepted: string[];
  readonly refusedByServer: string[];
  readonly notOffered: string[];
}

/** Tries every suite alone over TLS 1.2 (testssl -E style). */
async function enumerateTls12(port: number, certs: TestCertificates): Promise<Enumeration> {
  const result: Enumeration = { accepted: [], refusedByServer: [], notOffered: [] };
  for (const cipher of TLS12_SUITES) {
    if (!clientCanOffer(cipher)) {
      result.notOffered.push(cipher);
      continue;
    }
    const outcome = await handshake(port, certs, { ciphers: `${cipher}:@SECLEVEL=0`, maxVersion: 'TLSv1.2', minVersion: 'TLSv1.2' });
    if (outcome.ok) {
      expect(outcome.cipher).toBe(cipher);
      result.accepted.push(cipher);
    } else if (outcome.serverAlert) result.refusedByServer.push(cipher);
    else result.notOffered.push(cipher);
  }
  return result;
}

interface SimpleResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

async function httpRequest(
  gw: TestGateway,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<SimpleResponse> {
  const res = await request(`${gw.origin}${path}`, {
    dispatcher: gw.agent(),
    method: (opts.method ?? 'GET') as 'GET',
    ...(opts.headers !== undefined ? { headers: opts.headers } : {}),
    ...(opts.body !== undefined ? { body: opts.body } : {}),
  });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

/** Asserts an HSTS header of at least one year (Mozilla: two years) on a response, whatever made it (TLS-07). */
function expectHsts(value: string | string[] | undefined): void {
  expect(typeof value).toBe('string');
  const match = /^max-age=(\d+)(?:;|$)/.exec(String(value));
  expect(match, `Strict-Transport-Security: ${String(value)}`).not.toBeNull();
  expect(Number(match?.[1])).toBeGreaterThanOrEqual(31_536_000);
}

/** The value of one header in a raw HTTP/1.1 response text, or undefined. */
function rawHeader(text: string, name: string): string | undefined {
  const head = text.split('\r\n\r\n')[0] ?? '';
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0 && line.slice(0, colon).toLowerCase() === name) return line.slice(colon + 1).trim();
  }
  return undefined;
}

interface ParsedResponse {
  readonly status: number;
  readonly headers: Map<string, string>;
  readonly body: string;
}

/** Writes one HTTP/1.1 request on an open socket and reads exactly one Content-Length-framed response (keep-alive). */
function exchangeOnSocket(socket: TLSSocket, bytes: string, timeoutMs = 3000): Promise<ParsedResponse> {
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error('no complete response in time')), timeoutMs);
    const finish = (error: Error | undefined, value?: ParsedResponse): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      if (error !== undefined || value === undefined) reject(error ?? new Error('no response'));
      else resolve(value);
    };
    const onClose = (): void => finish(new Error('socket closed before a complete response'));
    const onData = (chunk: Buffer): void => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end === -1) return;
      const lines = buffer.subarray(0, end).toString('latin1').split('\r\n');
      const headers = new Map<string, string>();
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
      }
      const length = Number(headers.get('content-length') ?? '0');
      if (buffer.length < end + 4 + length) return;
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
      finish(undefined, { status, headers, body: buffer.subarray(end + 4, end + 4 + length).toString('utf8') });
    };
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.write(bytes);
  });
}

interface CliResult {
  readonly code: number | null;
  readonly output: string;
}

/**
 * Runs `openssl s_client` asynchronously (the gateway lives in this process: a sync spawn would block its event loop).
 * `script` may write to stdin while watching the output; the process is killed after `limitMs`.
 */
function sClient(args: string[], script: (write: (s: string) => void, output: () => string) => Promise<void>, limitMs = 8000): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn('openssl', ['s_client', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString('latin1')));
    child.stderr.on('data', (c: Buffer) => (output += c.toString('latin1')));
    child.stdin.on('error', () => undefined);
    const killer = setTimeout(() => child.kill('SIGKILL'), limitMs);
    child.once('close', (code) => {
      clearTimeout(killer);
      resolve({ code, output });
    });
    void script(
      (s) => {
        if (child.stdin.writable) child.stdin.write(s);
      },
      () => output,
    ).then(() => child.stdin.end());
  });
}

/** Short timeouts so slow cases end quickly; a generous new-connection rate because enumeration opens many connections. */
function testLimits(base: ConfigInput): ConfigInput['limits'] {
  return {
    ...base.limits,
    new_connections_per_ip: { points: 100_000, duration_s: 1 },
    handshake_timeout_ms: 2000,
    headers_timeout_ms: 1000,
    request_timeout_ms: 3000,
    keep_alive_timeout_ms: 3000,
  };
}

describe('TLS listener', () => {
  let gw: TestGateway;
  let upstream: TestUpstream;
  let certs: TestCertificates;

  let silent: NetServer;
  const silentSockets = new Set<Socket>();

  beforeAll(async () => {
    upstream = await startUpstream();
    const dead = await closedPort();
    // Accepts connections and never answers: the gateway's upstream headers timeout turns that into a 504.
    silent = netCreateServer((socket) => {
      silentSockets.add(socket);
      socket.on('error', () => undefined);
      socket.once('close', () => silentSockets.delete(socket));
    });
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const silentPort = (silent.address() as AddressInfo).port;
    gw = await startGateway((base) => ({
      ...base,
      limits: testLimits(base),
      upstreams: {
        app: { url: upstream.url },
        dead: { url: `http://127.0.0.1:${dead}`, connect_timeout_ms: 1000 },
        silent: { url: `http://127.0.0.1:${silentPort}`, headers_timeout_ms: 300 },
      },
      routes: [
        ...(base.routes ?? []),
        route('api', '/api', { methods: ['GET', 'POST'], to: 'app' }),
        route('small', '/small', { methods: ['POST'], to: 'app', body_limit_bytes: 16 }),
        route('secure', '/secure', { authn: ['mtls'], to: 'app' }),
        route('dead', '/dead', { to: 'dead' }),
        route('silent', '/silent', { to: 'silent' }),
        route('admin-only', '/admin-only', { authn: ['mtls'], authz: { allow: 'authenticated', subjects: ['spiffe://gatehouse.local/admin'] }, to: 'app' }),
      ],
    }));
    certs = gw.certs;
  });

  afterAll(async () => {
    await gw?.stop();
    await upstream?.close();
    for (const socket of silentSockets) socket.destroy();
    await new Promise<void>((resolve) => silent?.close(() => resolve()));
  });

  describe('TLS-01 protocol versions', () => {
    it('TLS-01 refuses a TLS 1.1 (and 1.0) ClientHello from node:tls with a protocol_version alert', async () => {
      const before = upstream.requests.length;
      for (const maxVersion of ['TLSv1.1', 'TLSv1'] as const) {
        // SECLEVEL=0 so the client really sends the old version instead of refusing it locally.
        const outcome = await handshake(gw.port, certs, { minVersion: 'TLSv1', maxVersion, ciphers: 'DEFAULT:@SECLEVEL=0' });
        expect(outcome.ok, maxVersion).toBe(false);
        if (!outcome.ok) expect(outcome.code, maxVersion).toBe('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
      }
      expect(upstream.requests.length).toBe(before);
    });

    it('TLS-01 refuses `openssl s_client -tls1_1`', async () => {
      const result = await sClient(
        ['-connect', `127.0.0.1:${gw.port}`, '-servername', 'localhost', '-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0'],
        async () => undefined,
      );
      expect(result.code).not.toBe(0);
      expect(result.output).toMatch(/alert protocol version/);
      expect(result.output).toMatch(/Cipher is \(NONE\)/);
    });

    it('TLS-01 accepts TLS 1.2 and TLS 1.3 (control)', async () => {
      const v12 = await handshake(gw.port, certs, { maxVersion: 'TLSv1.2' });
      const v13 = await handshake(gw.port, certs, {});
      expect(v12.ok && v12.protocol).toBe('TLSv1.2');
      expect(v13.ok && v13.protocol).toBe('TLSv1.3');
    });
  });

  describe('TLS-02 cipher suites', () => {
    it('TLS-02 accepts exactly the ECDHE-ECDSA AEAD trio over TLS 1.2 with the ECDSA certificate; CBC/RSA-kx/DHE/CCM/ARIA/NULL refused', async () => {
      const result = await enumerateTls12(gw.port, certs);
      expect(result.accepted.sort()).toEqual([...ECDSA_AEAD].sort());
      for (const weak of MUST_PROBE) expect(result.refusedByServer, `${weak} must be offered and refused`).toContain(weak);
      // Enough of the list was really offered for "nothing else is accepted" to mean something.
      expect(result.refusedByServer.length).toBeGreaterThanOrEqual(40);
    });

    it('TLS-02 accepts each of the three standard TLS 1.3 suites and refuses TLS_AES_128_CCM_SHA256 / CCM_8', async () => {
      for (const suite of ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']) {
        const outcome = await handshake(gw.port, certs, { minVersion: 'TLSv1.3', ciphers: suite });
        expect(outcome.ok, suite).toBe(true);
        if (outcome.ok) expect(outcome.cipher).toBe(suite);
      }
      const ccm = await handshake(gw.port, certs, { minVersion: 'TLSv1.3', ciphers: 'TLS_AES_128_CCM_SHA256' });
      expect(ccm.ok).toBe(false);
      if (!ccm.ok) expect(ccm.serverAlert, ccm.code).toBe(true);
      // CCM_8 (64-bit tags): newer OpenSSL (Node 24) will not even offer it at the default security level.
      const ccm8 = await handshake(gw.port, certs, { minVersion: 'TLSv1.3', ciphers: 'TLS_AES_128_CCM_8_SHA256' });
      expect(ccm8.ok).toBe(false);
      if (!ccm8.ok) expect(ccm8.serverAlert || ccm8.code === 'ERR_SSL_NO_CIPHERS_AVAILABLE', ccm8.code).toBe(true);
    });

    describe('with an RSA server certificate', () => {
      let rsaGw: TestGateway;
      let rsaDir: string;

      beforeAll(async () => {
        // An RSA certificate from the same CA, so the ECDHE-RSA suites and RSA key exchange become possible at all.
        rsaDir = mkdtempSync(join(tmpdir(), 'gatehouse-rsa-'));
        const key = join(rsaDir, 'rsa-key.pem');
        const csr = join(rsaDir, 'rsa.csr');
        const cert = join(rsaDir, 'rsa.pem');
        const ext = join(rsaDir, 'ext.cnf');
        writeFileSync(
          ext,
          'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n',
        );
        await execFileAsync('openssl', ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-subj', '/CN=localhost', '-out', csr]);
        await execFileAsync('openssl', [
          'x509',
          '-req',
          '-in',
          csr,
          '-CA',
          certs.paths.caCert,
          '-CAkey',
          certs.paths.caKey,
          '-set_serial',
          '0x5eed',
          '-days',
          '7',
          '-sha256',
          '-extfile',
          ext,
          '-out',
          cert,
        ]);
        rsaGw = await startGateway((base) => ({ ...base, limits: testLimits(base), tls: { ...base.tls, cert, key } }));
      });

      afterAll(async () => {
        await rsaGw?.stop();
        removeDir(rsaDir);
      });

      it('TLS-02 accepts exactly the ECDHE-RSA AEAD trio; RSA key exchange, CBC, DHE, CCM, ARIA refused', async () => {
        const result = await enumerateTls12(rsaGw.port, certs);
        expect(result.accepted.sort()).toEqual([...RSA_AEAD].sort());
        for (const weak of [
          'AES128-GCM-SHA256',
          'AES256-GCM-SHA384',
          'AES128-SHA',
          'ECDHE-RSA-AES128-SHA',
          'ECDHE-RSA-AES256-SHA384',
          'DHE-RSA-AES128-GCM-SHA256',
          'ECDHE-ARIA128-GCM-SHA256',
          'AES128-CCM',
        ]) {
          expect(result.refusedByServer, `${weak} must be offered and refused`).toContain(weak);
        }
      });
    });
  });

  describe('TLS-03 key-exchange groups', () => {
    it('TLS-03 accepts X25519, P-256 and P-384 each alone (TLS 1.3) and uses that group', async () => {
      const expected: Record<string, string> = { X25519: 'X25519', 'P-256': 'prime256v1', 'P-384': 'secp384r1' };
      for (const [curve, name] of Object.entries(expected)) {
        const outcome = await handshake(gw.port, certs, { ecdhCurve: curve });
        expect(outcome.ok, curve).toBe(true);
        if (outcome.ok) expect(outcome.group).toBe(name);
      }
      // TLS 1.2 with an ECDSA P-256 certificate: the client must list P-256 (RFC 8422 §5.1), and then it is used.
      const v12 = await handshake(gw.port, certs, { ecdhCurve: 'P-256', maxVersion: 'TLSv1.2' });
      expect(v12.ok && v12.group).toBe('prime256v1');
    });

    it('TLS-03 refuses secp521r1, X448, ffdhe2048 and ffdhe3072 offered alone', async () => {
      for (const curve of ['secp521r1', 'X448', 'ffdhe2048', 'ffdhe3072']) {
        const outcome = await handshake(gw.port, certs, { ecdhCurve: curve });
        expect(outcome.ok, curve).toBe(false);
        if (!outcome.ok) expect(outcome.serverAlert, `${curve}: ${outcome.code}`).toBe(true);
      }
    });
  });

  describe('TLS-04 renegotiation', () => {
    it('TLS-04 refuses a client-initiated renegotiation from node:tls over TLS 1.2 and serves nothing more on the connection', async () => {
      const before = upstream.requests.length;
      const socket = await new Promise<TLSSocket>((resolve, reject) => {
        const s = tlsConnect({ port: gw.port, ...tlsOptions(certs, { maxVersion: 'TLSv1.2' }) }, () => resolve(s));
        s.once('error', reject);
      });
      const received: Buffer[] = [];
      socket.on('data', (c: Buffer) => received.push(c));
      socket.on('error', () => undefined);
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      // Control: the connection works before the attempt.
      const first = await exchangeOnSocket(socket, 'GET /api/before HTTP/1.1\r\nHost: localhost\r\n\r\n');
      expect(first.status).toBe(200);
      expect(upstream.requests.length).toBe(before + 1);

      // The attempt fails one way or the other: renegotiate()'s callback gets an error (OpenSSL's no_renegotiation alert,
      // SSL_OP_NO_RENEGOTIATION), or the server destroys the socket (disableRenegotiation()). Success calls back with null.
      // A server that only sends the no_renegotiation alert leaves the connection open: then neither happens, and the
      // closed-in-time check below fails.
      const outcome = await new Promise<Error | null | 'closed' | 'pending'>((resolve) => {
        const started = socket.renegotiate({}, (error) => resolve(error));
        if (!started) resolve(new Error('renegotiate() refused to start'));
        void closed.then(() => resolve('closed'));
        void sleep(3000).then(() => resolve('pending'));
      });
      expect(outcome).not.toBeNull();
      // The server must close the connection by itself: the client writes nothing more until then (a client write after a
      // failed renegotiation would make the client's own TLS stack close it, hiding a server that keeps it open).
      const closedByServer = await Promise.race([closed.then(() => true), sleep(3000).then(() => false)]);
      if (!closedByServer && !socket.destroyed) {
        socket.write('GET /api/after HTTP/1.1\r\nHost: localhost\r\n\r\n');
        await sleep(500);
      }
      socket.destroy();
      expect(closedByServer).toBe(true);
      const text = Buffer.concat(received).toString('latin1');
      expect(text.match(/HTTP\/1\.1 200/g)?.length ?? 0).toBe(1);
      expect(upstream.requests.length).toBe(before + 1);
      expect(upstream.requests.some((r) => r.url === '/api/after')).toBe(false);
      // The attempt is a security event on record (LOG-11), not just a dropped connection.
      const refusals = (await gw.auditRecords()).filter((r) => r.decision === 'deny' && r.stage === 'edge' && /RENEGOTIATION/.test(r.reason ?? ''));
      expect(refusals.length).toBeGreaterThanOrEqual(1);
    });

    it('TLS-04 `openssl s_client -tls1_2` renegotiation (R) ends the connection before a request is served', async () => {
      const before = upstream.requests.length;
      const result = await sClient(
        ['-connect', `127.0.0.1:${gw.port}`, '-servername', 'localhost', '-tls1_2', '-CAfile', certs.paths.caCert],
        async (write, output) => {
          for (let i = 0; i < 100 && !/Verify return code/.test(output()); i++) await sleep(50);
          write('R\n');
          await sleep(1000);
          write('GET /api/after-r HTTP/1.1\r\nHost: localhost\r\n\r\n');
          await sleep(1000);
        },
      );
      expect(result.output).toMatch(/Protocol\s*: TLSv1\.2/);
      expect(result.output).toMatch(/RENEGOTIATING/);
      // s_client exits on its own (connection gone) with an error, never by our kill.
      expect(result.code).toBe(1);
      expect(result.output).not.toMatch(/HTTP\/1\.1 200/);
      expect(upstream.requests.length).toBe(before);
    });
  });

  describe('TLS-07 HSTS on every response', () => {
    it('TLS-07 sends HSTS on a proxied 200 and on the echo 200', async () => {
      const proxied = await httpRequest(gw, '/api/hsts');
      expect(proxied.status).toBe(200);
      expectHsts(proxied.headers['strict-transport-security']);
      const echo = await httpRequest(gw, '/public/hsts');
      expect(echo.status).toBe(200);
      expectHsts(echo.headers['strict-transport-security']);
    });

    it('TLS-07 sends HSTS on 401 (mtls route without a certificate), and the upstream sees nothing', async () => {
      const before = upstream.requests.length;
      const res = await httpRequest(gw, '/secure/x');
      expect(res.status).toBe(401);
      expect(problemCode(res.body)).toBe('unauthenticated');
      expectHsts(res.headers['strict-transport-security']);
      expect(upstream.requests.length).toBe(before);
    });

    it('TLS-07 sends HSTS on 404, 405, 400-from-edge and 413', async () => {
      const before = upstream.requests.length;
      const notFound = await httpRequest(gw, '/nowhere');
      expect(notFound.status).toBe(404);
      expect(problemCode(notFound.body)).toBe('not_found');
      expectHsts(notFound.headers['strict-transport-security']);

      const notAllowed = await httpRequest(gw, '/api/x', { method: 'DELETE' });
      expect(notAllowed.status).toBe(405);
      expect(problemCode(notAllowed.body)).toBe('method_not_allowed');
      expectHsts(notAllowed.headers['strict-transport-security']);

      const badHeader = await httpRequest(gw, '/api/x', { headers: { x_user: 'admin' } });
      expect(badHeader.status).toBe(400);
      expect(problemCode(badHeader.body)).toBe('invalid_header');
      expectHsts(badHeader.headers['strict-transport-security']);

      const tooLarge = await httpRequest(gw, '/small', { method: 'POST', body: 'x'.repeat(100), headers: { 'content-type': 'text/plain' } });
      expect(tooLarge.status).toBe(413);
      expect(problemCode(tooLarge.body)).toBe('payload_too_large');
      expectHsts(tooLarge.headers['strict-transport-security']);
      expect(upstream.requests.length).toBe(before);
    });

    it('TLS-07 sends HSTS on 403 (valid certificate, subject not on the allow-list), and the upstream sees nothing', async () => {
      const before = upstream.requests.length;
      const res = await request(`${gw.origin}/admin-only/x`, { dispatcher: gw.agent({ cert: certs.client }) });
      const body = await res.body.text();
      expect(res.statusCode).toBe(403);
      expect(problemCode(body)).toBe('forbidden');
      expectHsts(res.headers['strict-transport-security']);
      expect(upstream.requests.length).toBe(before);
    });

    it('TLS-07 sends HSTS on 502 (upstream port closed) and 504 (upstream silent)', async () => {
      const before = upstream.requests.length;
      const dead = await httpRequest(gw, '/dead/x');
      expect(dead.status).toBe(502);
      expect(problemCode(dead.body)).toBe('upstream_unavailable');
      expectHsts(dead.headers['strict-transport-security']);
      const slow = await httpRequest(gw, '/silent/x');
      expect(slow.status).toBe(504);
      expect(problemCode(slow.body)).toBe('upstream_timeout');
      expectHsts(slow.headers['strict-transport-security']);
      expect(upstream.requests.length).toBe(before);
    });

    it('TLS-07 sends HSTS on HTTP/2 error responses', async () => {
      const session = await h2Session(gw.port, certs);
      try {
        const res = await h2Request(session, { ':method': 'GET', ':path': '/nowhere', ':authority': 'localhost', ':scheme': 'https' });
        expect(res.status).toBe(404);
        expectHsts(res.headers['strict-transport-security']);
      } finally {
        session.close();
      }
    });

    it('TLS-07 sends HSTS on the raw clientError answers (400 malformed, 431 oversized, 408 timeout, 405 CONNECT)', async () => {
      const before = upstream.requests.length;
      const malformed = await rawHttp1(gw.port, certs, 'GET /api/x HTTP/1.1\r\nHost: localhost\r\nBroken Header\r\n\r\n');
      expect(malformed.status).toBe(400);
      expect(problemCode(malformed.text)).toBe('bad_request');
      expect(malformed.closed).toBe(true);
      expectHsts(rawHeader(malformed.text, 'strict-transport-security'));

      const oversized = await rawHttp1(gw.port, certs, `GET /api/x HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
      expect(oversized.status).toBe(431);
      expect(problemCode(oversized.text)).toBe('headers_too_large');
      expect(oversized.closed).toBe(true);
      expectHsts(rawHeader(oversized.text, 'strict-transport-security'));

      // headers_timeout_ms is 1000: an unfinished header block is answered 408 and closed.
      const slow = await rawHttp1(gw.port, certs, 'GET /api/x HTTP/1.1\r\nHost: localhost\r\n', { waitMs: 5000 });
      expect(slow.status).toBe(408);
      expect(problemCode(slow.text)).toBe('request_timeout');
      expect(slow.closed).toBe(true);
      expectHsts(rawHeader(slow.text, 'strict-transport-security'));

      const tunnel = await rawHttp1(gw.port, certs, 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n');
      expect(tunnel.status).toBe(405);
      expect(problemCode(tunnel.text)).toBe('method_not_allowed');
      expectHsts(rawHeader(tunnel.text, 'strict-transport-security'));
      expect(upstream.requests.length).toBe(before);
    });

    describe('with a tiny pre-auth per-IP quota', () => {
      let quotaGw: TestGateway;
      let quotaUpstream: TestUpstream;

      beforeAll(async () => {
        quotaUpstream = await startUpstream();
        quotaGw = await startGateway((base) => ({
          ...base,
          limits: { ...testLimits(base), pre_auth_per_ip: { points: 1, duration_s: 60 } },
          upstreams: { app: { url: quotaUpstream.url } },
          routes: [route('api', '/api', { to: 'app' })],
        }));
      });

      afterAll(async () => {
        await quotaGw?.stop();
        await quotaUpstream?.close();
      });

      it('TLS-07 sends HSTS on 429, and the refused request never reaches the upstream', async () => {
        const first = await httpRequest(quotaGw, '/api/one');
        expect(first.status).toBe(200);
        expect(quotaUpstream.requests.length).toBe(1);
        const second = await httpRequest(quotaGw, '/api/two');
        expect(second.status).toBe(429);
        expect(problemCode(second.body)).toBe('rate_limited');
        expect(second.headers['retry-after']).toMatch(/^\d+$/);
        expectHsts(second.headers['strict-transport-security']);
        expect(quotaUpstream.requests.length).toBe(1);
      });
    });
  });

  describe('TLS-08 ALPN and cleartext', () => {
    it('TLS-08 selects h2 for a client offering only h2, http/1.1 for only http/1.1', async () => {
      const h2 = await handshake(gw.port, certs, { ALPNProtocols: ['h2'] });
      expect(h2.ok && h2.alpn).toBe('h2');
      const h1 = await handshake(gw.port, certs, { ALPNProtocols: ['http/1.1'] });
      expect(h1.ok && h1.alpn).toBe('http/1.1');
    });

    it('TLS-08 never selects h2c or spdy/3 when a client offers only those', async () => {
      for (const protocol of ['h2c', 'spdy/3', 'http/1.0']) {
        const outcome = await handshake(gw.port, certs, { ALPNProtocols: [protocol] });
        // Either the handshake is refused (no_application_protocol) or nothing is selected; never the offered protocol.
        if (outcome.ok) expect(outcome.alpn, protocol).toBe(false);
        else expect(outcome.code, protocol).toBe('ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL');
      }
      const mixed = await handshake(gw.port, certs, { ALPNProtocols: ['h2c', 'http/1.1'] });
      expect(mixed.ok && mixed.alpn).toBe('http/1.1');
    });

    it('TLS-08 OA-13 cleartext HTTP/1.1 to the TLS port gets no HTTP response (no redirect) and is closed', async () => {
      const before = upstream.requests.length;
      const socket = netConnect({ port: gw.port, host: '127.0.0.1' });
      const received: Buffer[] = [];
      socket.on('data', (c: Buffer) => received.push(c));
      socket.on('error', () => undefined);
      await once(socket, 'connect');
      socket.write('GET /api/plain HTTP/1.1\r\nHost: localhost\r\n\r\n');
      const closed = await Promise.race([once(socket, 'close').then(() => true), sleep(4000).then(() => false)]);
      socket.destroy();
      expect(closed).toBe(true);
      expect(Buffer.concat(received).toString('latin1')).not.toMatch(/HTTP\//);
      expect(upstream.requests.length).toBe(before);
    });

    it('TLS-08 cleartext HTTP/2 prior-knowledge preface to the TLS port is not served', async () => {
      const before = upstream.requests.length;
      const socket = netConnect({ port: gw.port, host: '127.0.0.1' });
      const received: Buffer[] = [];
      socket.on('data', (c: Buffer) => received.push(c));
      socket.on('error', () => undefined);
      await once(socket, 'connect');
      socket.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
      const closed = await Promise.race([once(socket, 'close').then(() => true), sleep(4000).then(() => false)]);
      socket.destroy();
      expect(closed).toBe(true);
      const text = Buffer.concat(received).toString('latin1');
      expect(text).not.toMatch(/HTTP\//);
      expect(upstream.requests.length).toBe(before);
    });

    it('TLS-08 `Upgrade: h2c` over TLS is refused with 400 upgrade_refused and never forwarded', async () => {
      const before = upstream.requests.length;
      const res = await rawHttp1(
        gw.port,
        certs,
        'GET /api/x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
        { waitMs: 500 },
      );
      expect(res.status).toBe(400);
      expect(problemCode(res.text)).toBe('upgrade_refused');
      expect(res.text).not.toMatch(/101 Switching/);
      expect(upstream.requests.length).toBe(before);
    });
  });

  describe('TLS session tickets', () => {
    it('TLS session tickets: resumes a TLS 1.3 session with a ticket issued by the gateway (same key period)', async () => {
      const first = tlsConnect({ port: gw.port, ...tlsOptions(certs, { minVersion: 'TLSv1.3' }) });
      first.on('error', () => undefined);
      const ticket = new Promise<Buffer>((resolve) => first.once('session', resolve));
      await once(first, 'secureConnect');
      expect(first.isSessionReused()).toBe(false);
      // TLS 1.3 tickets arrive after the handshake; a request makes sure they were read.
      const res = await exchangeOnSocket(first, 'GET /public/t HTTP/1.1\r\nHost: localhost\r\n\r\n');
      expect(res.status).toBe(200);
      const session = await Promise.race([ticket, sleep(2000).then(() => undefined)]);
      first.destroy();
      expect(session).toBeInstanceOf(Buffer);

      const second = tlsConnect({ port: gw.port, ...tlsOptions(certs, { minVersion: 'TLSv1.3', ...(session !== undefined ? { session } : {}) }) });
      second.on('error', () => undefined);
      await once(second, 'secureConnect');
      expect(second.isSessionReused()).toBe(true);
      const again = await exchangeOnSocket(second, 'GET /public/t HTTP/1.1\r\nHost: localhost\r\n\r\n');
      expect(again.status).toBe(200);
      second.destroy();
    });
  });
});

describe('TLS-14 certificate hot-swap', () => {
  let gw: TestGateway;
  let dir: string;
  let certs: TestCertificates;
  let certPath: string;
  let keyPath: string;

  beforeAll(async () => {
    certs = await testCertificates();
    // The gateway reads its certificate from files this test owns, copied from the harness set.
    dir = mkdtempSync(join(tmpdir(), 'gatehouse-reload-'));
    certPath = join(dir, 'server.pem');
    keyPath = join(dir, 'server-key.pem');
    copyFileSync(certs.paths.serverCert, certPath);
    copyFileSync(certs.paths.serverKey, keyPath);
    gw = await startGateway((base) => ({ ...base, limits: testLimits(base), tls: { ...base.tls, cert: certPath, key: keyPath } }));
  });

  afterAll(async () => {
    await gw?.stop();
    removeDir(dir);
  });

  it('TLS-14 reloadCertificates() serves the new certificate to new handshakes while an open keep-alive connection keeps working', async () => {
    const oldSerial = new X509Certificate(readFileSync(certPath)).serialNumber;
    const kept = tlsConnect({ port: gw.port, ...tlsOptions(certs) });
    kept.on('error', () => undefined);
    await once(kept, 'secureConnect');
    expect(kept.getPeerCertificate().serialNumber).toBe(oldSerial);
    const before = await exchangeOnSocket(kept, 'GET /public/before HTTP/1.1\r\nHost: localhost\r\n\r\n');
    expect(before.status).toBe(200);

    const ca: CertificateAndKey = { certPem: readFileSync(certs.paths.caCert, 'utf8'), keyPem: readFileSync(certs.paths.caKey, 'utf8') };
    const fresh = await issueServerCertificate(ca, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    writeFileSync(keyPath, fresh.keyPem);
    writeFileSync(certPath, fresh.certPem);
    const newSerial = new X509Certificate(fresh.certPem).serialNumber;
    expect(newSerial).not.toBe(oldSerial);

    // Requests in flight on several connections while the context is swapped: none may fail (matrix: 0 failed requests).
    const load = gw.agent();
    const inFlight = Array.from({ length: 40 }, (_, i) =>
      request(`${gw.origin}/public/load-${i}`, { dispatcher: load }).then(async (res) => {
        await res.body.text();
        return res.statusCode;
      }),
    );
    await sleep(5);
    gw.gateway.reloadCertificates();
    const statuses = await Promise.all(inFlight);
    expect(statuses.filter((status) => status !== 200)).toEqual([]);

    const after = await exchangeOnSocket(kept, 'GET /public/after HTTP/1.1\r\nHost: localhost\r\n\r\n');
    expect(after.status).toBe(200);
    expect(kept.destroyed).toBe(false);
    kept.destroy();

    const next = await handshake(gw.port, certs, {});
    expect(next.ok && next.serial).toBe(newSerial);
    // The reloaded context keeps the hardened settings (same secureContextOptions): TLS 1.1 and CBC still refused.
    const old = await handshake(gw.port, certs, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' });
    expect(old.ok).toBe(false);
    const cbc = await handshake(gw.port, certs, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0' });
    expect(cbc.ok).toBe(false);
    const x448 = await handshake(gw.port, certs, { ecdhCurve: 'X448' });
    expect(x448.ok).toBe(false);
    const h2 = await handshake(gw.port, certs, { ALPNProtocols: ['h2'] });
    expect(h2.ok && h2.alpn).toBe('h2');
  });

  it('TLS-14 a certificate whose key does not match is refused by reloadCertificates(); the serving certificate stays', async () => {
    const serving = await handshake(gw.port, certs, {});
    expect(serving.ok).toBe(true);
    const ca: CertificateAndKey = { certPem: readFileSync(certs.paths.caCert, 'utf8'), keyPem: readFileSync(certs.paths.caKey, 'utf8') };
    const other = await issueServerCertificate(ca, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    const goodCert = readFileSync(certPath, 'utf8');
    // A half-finished rollout: new certificate, old key.
    writeFileSync(certPath, other.certPem);
    expect(() => gw.gateway.reloadCertificates()).toThrow();
    const still = await handshake(gw.port, certs, {});
    expect(still.ok && still.serial).toBe(serving.ok && serving.serial);
    writeFileSync(certPath, goodCert);
  });
});
