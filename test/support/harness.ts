// Test harness: real gateways on ephemeral ports with real TLS, a recording upstream, and raw-byte clients.
// Nothing here mocks a Gatehouse part; it only starts them and speaks the wire protocols.
import { route } from './routes.js';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect as h2connect, type ClientHttp2Session, type IncomingHttpHeaders as H2Headers, type OutgoingHttpHeaders } from 'node:http2';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { pino } from 'pino';
import { Agent } from 'undici';
import type { CheckpointSigner } from '../../src/audit/audit-key.js';
import type { AuditEvent, AuditRecord, AuditSink } from '../../src/audit/event.js';
import { directoryExport } from '../../src/audit/export.js';
import { readRecords } from '../../src/audit/read.js';
import { AuditLog, type AuditLogOptions } from '../../src/audit/log.js';
import { buildConfig } from '../../src/config/load.js';
import type { Config, ConfigInput } from '../../src/config/schema.js';
import { Gateway } from '../../src/gateway.js';
import { HEALTH_CHECK_AGENT } from '../../src/proxy/upstream.js';
import type { RoutingChange } from '../../src/routing.js';
import { createCertificateAuthority, initDevCertificates, issueClientCertificate, type CertificateAndKey, type DevCertificatePaths } from '../../src/tls/ca.js';

export interface TestCertificates {
  readonly dir: string;
  readonly paths: DevCertificatePaths;
  readonly ca: Buffer;
  readonly client: CertificateAndKey;
  /** Valid chain, but issued by a CA the gateway does not trust. */
  readonly untrustedClient: CertificateAndKey;
  readonly expiredClient: CertificateAndKey;
  readonly serverAuthOnlyClient: CertificateAndKey;
  /** Chains to the trusted CA, clientAuth EKU, but only a CN (no SAN). */
  readonly cnOnlyClient: CertificateAndKey;
  /** A second valid client with a DNS SAN identity. */
  readonly dnsClient: CertificateAndKey;
}

let certificatesOnce: Promise<TestCertificates> | undefined;

/** One CA and a set of client certificates per test file (module instance), made by the gateway's own CA code. */
export function testCertificates(): Promise<TestCertificates> {
  certificatesOnce ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-certs-'));
    const { paths } = await initDevCertificates(dir);
    const ca: CertificateAndKey = { certPem: readFileSync(paths.caCert, 'utf8'), keyPem: readFileSync(paths.caKey, 'utf8') };
    const client: CertificateAndKey = { certPem: readFileSync(paths.clientCert, 'utf8'), keyPem: readFileSync(paths.clientKey, 'utf8') };
    const otherCa = await createCertificateAuthority({ commonName: 'Untrusted Test CA' });
    const day = 86_400_000;
    const [untrustedClient, expiredClient, serverAuthOnlyClient, cnOnlyClient, dnsClient] = await Promise.all([
      issueClientCertificate(otherCa, { commonName: 'intruder', uris: ['spiffe://gatehouse.local/dev-client'] }),
      issueClientCertificate(ca, {
        commonName: 'expired',
        uris: ['spiffe://gatehouse.local/expired'],
        notBefore: new Date(Date.now() - 10 * day),
        notAfter: new Date(Date.now() - day),
      }),
      issueClientCertificate(ca, { commonName: 'server-only', uris: ['spiffe://gatehouse.local/server-only'], extendedKeyUsage: 'serverAuth' }),
      issueClientCertificate(ca, { commonName: 'cn-only' }),
      issueClientCertificate(ca, { commonName: 'svc', dnsNames: ['svc.internal.example'] }),
    ]);
    return { dir, paths, ca: Buffer.from(ca.certPem), client, untrustedClient, expiredClient, serverAuthOnlyClient, cnOnlyClient, dnsClient };
  })();
  return certificatesOnce;
}

export interface RecordedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  readonly body: Buffer;
}

export interface TestUpstream {
  readonly url: string;
  readonly port: number;
  /** Requests the gateway forwarded (its health checks are not among them). */
  readonly requests: RecordedRequest[];
  /** The gateway's active health checks (User-Agent gatehouse-health-check). */
  readonly healthChecks: RecordedRequest[];
  /** Replace how the upstream answers (default: 200 JSON describing the request). */
  respond: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;
  /** The status health checks get (default 200). */
  healthStatus: number;
  close(): Promise<void>;
}

/** A plain HTTP upstream on 127.0.0.1:0 that records every request it receives, byte for byte. */
export async function startUpstream(): Promise<TestUpstream> {
  const requests: RecordedRequest[] = [];
  const healthChecks: RecordedRequest[] = [];
  const upstream: { respond: TestUpstream['respond']; healthStatus: number } = {
    healthStatus: 200,
    respond: (req, res, body) => {
      const payload = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, bodyBytes: body.length });
      res.writeHead(200, { 'content-type': 'application/json', server: 'upstream/1.0', 'x-powered-by': 'test' });
      res.end(payload);
    },
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const recorded = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body };
      if (req.headers['user-agent'] === HEALTH_CHECK_AGENT) {
        healthChecks.push(recorded);
        res.writeHead(upstream.healthStatus).end();
        return;
      }
      requests.push(recorded);
      upstream.respond(req, res, body);
    });
  });
  server.keepAliveTimeout = 10_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    healthChecks,
    get healthStatus() {
      return upstream.healthStatus;
    },
    set healthStatus(status) {
      upstream.healthStatus = status;
    },
    get respond() {
      return upstream.respond;
    },
    set respond(fn) {
      upstream.respond = fn;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface TestGateway {
  readonly gateway: Gateway;
  readonly port: number;
  readonly origin: string;
  readonly certs: TestCertificates;
  readonly dataDir: string;
  /** Every log line the gateway wrote, raw JSON text. */
  readonly logs: string[];
  /** Audit records written so far (flushes first). */
  auditRecords(): Promise<AuditRecord[]>;
  /**
   * Reloads with the configuration `configure` makes of the base config (built as at start, with the same data dir);
   * resolves with what changed, undefined when the gateway refused it.
   */
  reload(configure: (base: ConfigInput, certs: TestCertificates) => ConfigInput): Promise<RoutingChange | undefined>;
  /** An undici dispatcher trusting the test CA (optionally presenting a client certificate). */
  agent(opts?: { cert?: CertificateAndKey; allowH2?: boolean }): Agent;
  stop(): Promise<void>;
}

/** A minimal valid config: one public echo route at /public. Tests extend or replace parts of it. */
export function baseConfig(certs: TestCertificates): ConfigInput {
  return {
    server: { host: '127.0.0.1', port: 0 },
    tls: { cert: certs.paths.serverCert, key: certs.paths.serverKey, client_ca: certs.paths.caCert },
    routes: [route('public', '/public', { methods: ['GET', 'POST'] })],
    log: { level: 'debug', access: true },
    shutdown: { drain_timeout_ms: 2000 },
    // Tests look up each refusal's own record by request id, many from one address in a few seconds; LOG-08 aggregation
    // (default: past 20 per source and window) is tested on its own, with its defaults, in test/audit/aggregate.test.ts.
    audit: { aggregate_refusals: { after: 1_000_000 } },
  };
}

/**
 * Active health checks are on by default; here they are off unless a test sets `health`: most tests count the requests or
 * connections their upstreams see, and a check every ten seconds would add to them (test/proxy/targets.test.ts tests them).
 */
function withoutHealthChecks(input: ConfigInput): ConfigInput {
  if (input.upstreams === undefined) return input;
  const upstreams = Object.fromEntries(Object.entries(input.upstreams).map(([name, upstream]) => [name, { health: false as const, ...upstream }]));
  return { ...input, upstreams };
}

export async function startGateway(
  configure: (base: ConfigInput, certs: TestCertificates) => ConfigInput = (b) => b,
  deps: {
    audit?: AuditSink;
    /** Reuse (and keep) this data directory, e.g. to restart on the same store. */ dataDir?: string;
    /** The wall clock of the route quotas' calendar windows. */
    now?: () => number;
  } = {},
): Promise<TestGateway> {
  const certs = await testCertificates();
  const dataDir = deps.dataDir ?? mkdtempSync(join(tmpdir(), 'gatehouse-data-'));
  const configOf = (make: typeof configure): Config => buildConfig({ ...withoutHealthChecks(make(baseConfig(certs), certs)), data_dir: dataDir }, dataDir);
  const config = configOf(configure);
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, callback) {
      logs.push(chunk.toString('utf8'));
      callback();
    },
  });
  const log = pino({ level: config.log.level }, sink);
  const gateway = await Gateway.create(config, {
    log,
    ...(deps.audit !== undefined ? { audit: deps.audit } : {}),
    ...(deps.now !== undefined ? { now: deps.now } : {}),
  });
  const address = await gateway.start();
  const agents: Agent[] = [];
  let stopped = false;
  return {
    gateway,
    port: address.port,
    origin: `https://127.0.0.1:${address.port}`,
    certs,
    dataDir,
    logs,
    auditRecords: async () => {
      await gateway.audit.flush().catch(() => undefined);
      if (!existsSync(config.audit.dir)) return [];
      // Decisions only: the chain's own records (segment starts) are not about requests.
      return readRecords(config.audit.dir).filter((record): record is typeof record & AuditRecord => record.type === 'decision');
    },
    reload: (make) => gateway.reload(() => configOf(make)),
    agent: (opts = {}) => {
      const agent = new Agent({
        connect: {
          ca: certs.ca,
          servername: 'localhost',
          ...(opts.cert !== undefined ? { cert: opts.cert.certPem, key: opts.cert.keyPem } : {}),
        },
        allowH2: opts.allowH2 ?? false,
      });
      agents.push(agent);
      return agent;
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await Promise.all(agents.map((a) => a.close().catch(() => undefined)));
      await gateway.stop();
      if (deps.dataDir === undefined) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** TLS options that trust the test CA; add `cert`/`key` for mTLS. */
export function tlsOptions(certs: TestCertificates, extra: ConnectionOptions = {}): ConnectionOptions {
  return { host: '127.0.0.1', servername: 'localhost', ca: certs.ca, ALPNProtocols: ['http/1.1'], ...extra };
}

export async function openTls(port: number, certs: TestCertificates, extra: ConnectionOptions = {}): Promise<TLSSocket> {
  const socket = tlsConnect({ port, ...tlsOptions(certs, extra) });
  await once(socket, 'secureConnect');
  return socket;
}

export interface RawResponse {
  /** Everything the server sent before closing (or before the timeout). */
  readonly text: string;
  /** Status code of the first response, or 0 when none came. */
  readonly status: number;
  /** True when the server closed the connection within the wait. */
  readonly closed: boolean;
}

/**
 * Sends exact bytes over TLS (HTTP/1.1 ALPN) and collects what comes back until the server closes or `waitMs` passes.
 */
export async function rawHttp1(
  port: number,
  certs: TestCertificates,
  bytes: string | Buffer,
  opts: { waitMs?: number; tls?: ConnectionOptions } = {},
): Promise<RawResponse> {
  const socket = await openTls(port, certs, opts.tls);
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => undefined);
  socket.write(bytes);
  const closed = await Promise.race([
    once(socket, 'close').then(() => true),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), opts.waitMs ?? 2000)),
  ]);
  socket.destroy();
  const text = Buffer.concat(chunks).toString('latin1');
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(text);
  return { text, status: match ? Number(match[1]) : 0, closed };
}

export interface H2Response {
  readonly status: number;
  readonly headers: H2Headers;
  readonly body: string;
}

export async function h2Session(port: number, certs: TestCertificates, extra: ConnectionOptions = {}): Promise<ClientHttp2Session> {
  const session = h2connect(`https://127.0.0.1:${port}`, { ca: certs.ca, servername: 'localhost', ...extra });
  session.on('error', () => undefined);
  await once(session, 'connect');
  return session;
}

/** One HTTP/2 request; `headers` may include pseudo-headers. Rejects on stream errors (RST_STREAM). */
export function h2Request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: string | Buffer): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let responseHeaders: H2Headers = {};
    stream.on('response', (h) => {
      responseHeaders = h;
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () =>
      resolve({ status: Number(responseHeaders[':status'] ?? 0), headers: responseHeaders, body: Buffer.concat(chunks).toString('utf8') }),
    );
    stream.on('error', reject);
    if (body !== undefined) stream.end(body);
  });
}

/** Parses a problem+json body and returns its stable code. */
export function problemCode(body: string): string | undefined {
  const start = body.indexOf('{');
  if (start === -1) return undefined;
  try {
    return (JSON.parse(body.slice(start)) as { code?: string }).code;
  } catch {
    return undefined;
  }
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** An audit log in `dir` with test-friendly defaults (fsync off, fast recovery); `options` override them. */
export function testAuditLog(dir: string, options: Partial<AuditLogOptions> = {}): AuditLog {
  return new AuditLog({
    dir,
    instance: 'test',
    fsync: 'off',
    fsyncIntervalMs: 1000,
    onFailure: 'fail-closed',
    segmentMaxBytes: 64 * 1024 * 1024,
    segmentMaxAgeMs: 86_400_000,
    maxBufferedBytes: 8 * 1024 * 1024,
    log: pino({ level: 'silent' }),
    recoveryIntervalMs: 100,
    ...options,
  });
}

/**
 * A signed chain as a gateway writes it: `count` decisions (`event(i)`, default auditEvent(i)), one flushed at a time,
 * a checkpoint every `everyRecords` (default 10) or 60 s, each exported to `exportDir`, then a clean stop. `step` runs
 * before each record (a test clock moves there).
 */
export async function writeSignedLog(
  dir: string,
  opts: {
    readonly signer: CheckpointSigner;
    readonly exportDir: string;
    readonly count: number;
    readonly instance?: string;
    readonly everyRecords?: number;
    readonly event?: (i: number) => AuditEvent;
    readonly step?: () => void;
  } & Partial<Pick<AuditLogOptions, 'segmentMaxBytes' | 'segmentMaxAgeMs' | 'now'>>,
): Promise<void> {
  const instance = opts.instance ?? 'test';
  mkdirSync(opts.exportDir, { recursive: true });
  const log = testAuditLog(dir, {
    instance,
    ...(opts.segmentMaxBytes !== undefined ? { segmentMaxBytes: opts.segmentMaxBytes } : {}),
    ...(opts.segmentMaxAgeMs !== undefined ? { segmentMaxAgeMs: opts.segmentMaxAgeMs } : {}),
    ...(opts.now !== undefined ? { now: opts.now } : {}),
    checkpoints: {
      signer: opts.signer,
      everyRecords: opts.everyRecords ?? 10,
      intervalMs: 60_000,
      exportTo: directoryExport(opts.exportDir, instance, pino({ level: 'silent' })),
    },
  });
  for (let i = 1; i <= opts.count; i++) {
    opts.step?.();
    log.append(opts.event?.(i) ?? auditEvent(i));
    await log.flush();
  }
  await log.close();
}

/** A decision event for audit-log tests: request `req-<i>`, allowed, with `extra` on top. */
export function auditEvent(i: number, extra: Partial<AuditEvent> = {}): AuditEvent {
  return {
    request_id: `req-${i}`,
    trace_id: null,
    method: 'GET',
    path: '/x',
    raw_target: '/x',
    route: 'r',
    protocol: 'h1',
    client_ip: '127.0.0.1',
    peer_ip: '127.0.0.1',
    decision: 'allow',
    stage: 'handler',
    code: null,
    reason: null,
    status: null,
    subject: null,
    auth_method: null,
    cert_thumbprint: null,
    client_id: null,
    jti: null,
    scopes: null,
    ...extra,
  };
}

/** A loopback port nothing listens on: bound once, then released (an upstream that is down). */
export async function closedPort(): Promise<number> {
  const server = createNetServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
