// LOG-05: checkpoints exported off the host. Real TLS against a real HTTPS collector on 127.0.0.1, certificates made at
// test time by the gateway's own CA code: a collector the pinned CA did not certify gets nothing, and what the collector
// does accept is every line, in order, once.
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { createServer, type Server, type ServerOptions } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { pino, type Logger } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { combine, directoryExport, httpsExport, type CheckpointExport, type HttpsExportOptions } from '../../src/audit/export.js';
import { createCertificateAuthority, issueClientCertificate, issueServerCertificate, type CertificateAndKey } from '../../src/tls/ca.js';
import { eventually } from '../support/eventually.js';

const root = mkdtempSync(join(tmpdir(), 'gatehouse-export-'));

interface Certificates {
  readonly ca: CertificateAndKey;
  /** For 127.0.0.1 and localhost, from the pinned CA. */
  readonly server: CertificateAndKey;
  /** From the pinned CA, but for another host name. */
  readonly wrongHost: CertificateAndKey;
  /** For 127.0.0.1 and localhost, from an unrelated CA. */
  readonly otherCaServer: CertificateAndKey;
  readonly client: CertificateAndKey;
}

let certs: Certificates;

beforeAll(async () => {
  const ca = await createCertificateAuthority({ commonName: 'Export Test CA' });
  const other = await createCertificateAuthority({ commonName: 'Unrelated Test CA' });
  const local = { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] };
  certs = {
    ca,
    server: await issueServerCertificate(ca, local),
    wrongHost: await issueServerCertificate(ca, { dnsNames: ['collector.example'], ipAddresses: [] }),
    otherCaServer: await issueServerCertificate(other, local),
    client: await issueClientCertificate(ca, { commonName: 'gatehouse-exporter' }),
  };
});

interface Received {
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly status: number;
  readonly clientCn: string | undefined;
}

type Answer = number | 'hang' | 'flood';

interface Collector {
  readonly url: URL;
  readonly received: Received[];
  /** TLS handshakes the collector saw fail. */
  readonly handshakeFailures: number;
  /** Bodies answered 2xx, in arrival order, joined. */
  accepted(): string;
  /** The status the next requests get; 'hang' never answers, 'flood' answers 200 with a body that never ends. */
  answer: Answer;
  /** Flooded answers the exporter cut off (the connection closed under it). */
  readonly floodsCut: number;
  useCertificate(cert: CertificateAndKey): void;
  close(): Promise<void>;
}

const collectors: Collector[] = [];
const opened: CheckpointExport[] = [];

// Collectors first: an export still trying (a failed test) then gives up at once instead of waiting out its timeout.
afterEach(async () => {
  await Promise.all(collectors.splice(0).map((c) => c.close()));
  await Promise.all(opened.splice(0).map((e) => e.close()));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A real HTTPS collector on 127.0.0.1:0 recording every request it reads, byte for byte. */
async function startCollector(cert: CertificateAndKey, extra: ServerOptions = {}, path = '/checkpoints'): Promise<Collector> {
  const received: Received[] = [];
  const state: { answer: Answer } = { answer: 200 };
  const counts = { handshakeFailures: 0, floodsCut: 0 };
  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem, ...extra }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const { answer } = state;
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      const cn = peer.subject?.CN;
      received.push({
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        status: answer === 'hang' ? 0 : answer === 'flood' ? 200 : answer,
        clientCn: typeof cn === 'string' ? cn : undefined,
      });
      if (answer === 'hang') return;
      if (answer === 'flood') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        const chunk = Buffer.alloc(16 * 1024, 0x61);
        const more = (): void => {
          while (!res.destroyed && res.write(chunk));
        };
        res.on('drain', more);
        res.on('close', () => counts.floodsCut++);
        more();
        return;
      }
      res.writeHead(answer, { 'content-type': 'text/plain' });
      res.end(answer < 300 ? 'ok' : 'collector trouble');
    });
  });
  server.on('tlsClientError', () => counts.handshakeFailures++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const collector: Collector = {
    url: new URL(`https://127.0.0.1:${port}${path}`),
    received,
    get handshakeFailures() {
      return counts.handshakeFailures;
    },
    get floodsCut() {
      return counts.floodsCut;
    },
    accepted: () =>
      received
        .filter((r) => r.status >= 200 && r.status < 300)
        .map((r) => r.body)
        .join(''),
    get answer() {
      return state.answer;
    },
    set answer(value) {
      state.answer = value;
    },
    useCertificate: (next) => server.setSecureContext({ cert: next.certPem, key: next.keyPem }),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  collectors.push(collector);
  return collector;
}

type LogEntry = Record<string, unknown> & { level: number; msg: string };

function capturingLogger(): { log: Logger; entries: LogEntry[]; text: () => string } {
  const entries: LogEntry[] = [];
  const raw: string[] = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write: (chunk: Buffer, _e, cb) => {
        raw.push(chunk.toString('utf8'));
        entries.push(JSON.parse(chunk.toString('utf8')) as LogEntry);
        cb();
      },
    }),
  );
  return { log, entries, text: () => raw.join('') };
}

const ERROR = 50;
const WARN = 40;
const failures = (entries: LogEntry[]): LogEntry[] => entries.filter((e) => e.level === ERROR && e.msg === 'audit checkpoint export failed');

function exporter(options: Partial<HttpsExportOptions> & Pick<HttpsExportOptions, 'url' | 'log'>): CheckpointExport {
  const made = httpsExport({ ca: certs.ca.certPem, instance: 'gw-1', retryMinMs: 10, retryMaxMs: 40, timeoutMs: 5000, ...options });
  opened.push(made);
  return made;
}

/** Checkpoint-shaped lines, each complete with its newline. */
const lines = (from: number, to: number): string[] =>
  Array.from({ length: to - from + 1 }, (_, i) => `${JSON.stringify({ seq: from + i, type: 'checkpoint', covers_seq: from + i - 1, signature: 'c2ln' })}\n`);

describe('httpsExport', () => {
  it('POSTs the lines in order as application/x-ndjson, naming the instance', async () => {
    const collector = await startCollector(certs.server);
    const { log, entries } = capturingLogger();
    const out = exporter({ url: collector.url, log });
    const sent = lines(1, 5);
    for (const line of sent) out.send(line);
    await eventually(() => collector.accepted() === sent.join(''), 15_000, 'all lines accepted', 5);
    for (const request of collector.received) {
      expect(request.url).toBe('/checkpoints');
      expect(request.headers['content-type']).toBe('application/x-ndjson');
      expect(request.headers['x-gatehouse-instance']).toBe('gw-1');
      expect(request.headers['content-length']).toBe(String(Buffer.byteLength(request.body)));
    }
    await out.close();
    expect(collector.accepted()).toBe(sent.join(''));
    expect(entries.filter((e) => e.level >= WARN)).toEqual([]);
  });

  it('a collector the pinned CA did not certify gets nothing (the handshake fails); once it has the right certificate the queued lines arrive', async () => {
    const collector = await startCollector(certs.otherCaServer);
    const { log, entries } = capturingLogger();
    const out = exporter({ url: collector.url, log });
    const sent = lines(1, 2);
    for (const line of sent) out.send(line);
    await eventually(() => failures(entries).length > 0, 15_000, 'a failure logged', 5);
    expect(failures(entries)[0]).toMatchObject({ url: collector.url.href, queued: 2, dropped: 0 });
    expect(String(failures(entries)[0]?.['err'])).toMatch(/certificate/i);

    // Retried: more connections come, each one refused in the handshake, none getting as far as a request.
    await eventually(() => collector.handshakeFailures >= 3, 15_000, 'retries refused in the handshake', 5);
    expect(collector.received).toEqual([]);

    collector.useCertificate(certs.server);
    await eventually(() => collector.accepted() === sent.join(''), 15_000, 'queued lines delivered after the certificate was fixed', 5);
    expect(collector.received.map((r) => r.body)).toEqual([sent.join('')]);
    await eventually(() => entries.some((e) => e.msg === 'audit checkpoint export recovered'), 15_000, 'recovery logged', 5);
    expect(entries.find((e) => e.msg === 'audit checkpoint export recovered')).toMatchObject({ level: WARN, url: collector.url.href, delivered: 2 });
  });

  it('a certificate from the pinned CA for another host name is refused too (hostname verification)', async () => {
    const collector = await startCollector(certs.wrongHost);
    const { log, entries } = capturingLogger();
    const out = exporter({ url: collector.url, log });
    out.send(lines(1, 1)[0]!);
    await eventually(() => failures(entries).length > 0, 15_000, 'a failure logged', 5);
    expect(String(failures(entries)[0]?.['err'])).toMatch(/127\.0\.0\.1.*not in the cert's list/);
    expect(collector.received).toEqual([]);
  });

  it('a 500 keeps the lines and retries them; the collector ends up accepting each line once, in order', async () => {
    const collector = await startCollector(certs.server, {}, '/ingest?key=s3cret');
    collector.answer = 500;
    const { log, entries, text } = capturingLogger();
    const out = exporter({ url: collector.url, log });
    const sent = lines(1, 3);
    out.send(sent[0]!);
    out.send(sent[1]!);
    // Sent again after a refusal: a retry of the same lines.
    await eventually(() => collector.received.length >= 2, 15_000, 'a retry after the 500', 5);
    out.send(sent[2]!);
    await eventually(() => collector.received.some((r) => r.body.includes(sent[2]!)), 15_000, 'the later line sent with the retried ones', 5);
    collector.answer = 200;
    await eventually(() => collector.accepted() === sent.join(''), 15_000, 'all lines accepted', 5);
    // Every attempt carried a run of the lines from the oldest one not yet accepted, in order.
    for (const request of collector.received) expect(sent.join('').includes(request.body) && request.body.length > 0).toBe(true);
    expect(collector.received.filter((r) => r.status === 500).every((r) => r.body.startsWith(sent[0]!))).toBe(true);
    await out.close();
    expect(collector.accepted()).toBe(sent.join(''));

    expect(collector.received[0]?.url).toBe('/ingest?key=s3cret');
    expect(failures(entries)[0]).toMatchObject({ url: `${collector.url.origin}/ingest`, status: 500, queued: 2 });
    // The URL's query (and credentials, were there any) stay out of the log.
    expect(text()).not.toContain('s3cret');
    expect(entries.find((e) => e.msg === 'audit checkpoint export recovered')).toMatchObject({ url: `${collector.url.origin}/ingest` });
  });

  it('an answer body is read and discarded up to a cap, then the connection is cut', async () => {
    const collector = await startCollector(certs.server);
    collector.answer = 'flood';
    const { log } = capturingLogger();
    // No timeout in reach: only the cap ends the endless answer.
    const out = exporter({ url: collector.url, log, timeoutMs: 600_000 });
    const sent = lines(1, 2);
    out.send(sent[0]!);
    await eventually(() => collector.floodsCut === 1, 15_000, 'the exporter cut the endless answer', 5);
    collector.answer = 200;
    out.send(sent[1]!);
    await eventually(() => collector.accepted() === sent.join(''), 15_000, 'the next line delivered after the cut', 5);
    expect(collector.received.map((r) => r.body)).toEqual(sent);
  });

  it('a full queue drops the oldest lines, counts them in the alert, and delivers the newest', async () => {
    const collector = await startCollector(certs.otherCaServer);
    const { log, entries } = capturingLogger();
    const out = exporter({ url: collector.url, log, maxQueued: 3 });
    const sent = lines(1, 5);
    for (const line of sent) out.send(line);
    await eventually(() => failures(entries).length > 0, 15_000, 'a failure logged', 5);
    expect(failures(entries)[0]).toMatchObject({ queued: 3, dropped: 2 });
    collector.useCertificate(certs.server);
    await eventually(() => collector.accepted() === sent.slice(2).join(''), 15_000, 'the newest three lines delivered', 5);
    await out.close();
    expect(collector.received.map((r) => r.body)).toEqual([sent.slice(2).join('')]);
  });

  it('presents the client certificate to a collector that requires one (mTLS)', async () => {
    const collector = await startCollector(certs.server, { requestCert: true, rejectUnauthorized: true, ca: certs.ca.certPem });
    const anonymous = capturingLogger();
    const without = exporter({ url: collector.url, log: anonymous.log });
    without.send(lines(1, 1)[0]!);
    await eventually(() => failures(anonymous.entries).length > 0, 15_000, 'the exporter without a certificate refused', 5);
    await without.close();
    expect(collector.received).toEqual([]);

    const { log } = capturingLogger();
    const out = exporter({ url: collector.url, log, clientCert: certs.client.certPem, clientKey: certs.client.keyPem });
    out.send(lines(2, 2)[0]!);
    await eventually(() => collector.accepted() === lines(2, 2)[0], 15_000, 'delivered over mTLS', 5);
    expect(collector.received.map((r) => r.clientCn)).toEqual(['gatehouse-exporter']);
  });

  it('refuses anything but an https: URL, and a CA that is not a certificate, at construction', () => {
    const { log } = capturingLogger();
    const base = { ca: certs.ca.certPem, instance: 'gw-1', log };
    expect(() => httpsExport({ ...base, url: new URL('http://127.0.0.1:9/checkpoints') })).toThrow(/only https: URLs/);
    expect(() => httpsExport({ ...base, url: new URL('file:///tmp/checkpoints') })).toThrow(/only https: URLs/);
    // An empty CA would make Node trust the system roots instead.
    expect(() => httpsExport({ ...base, ca: '', url: new URL('https://127.0.0.1:9/') })).toThrow(/pinned CA/);
    expect(() => httpsExport({ ...base, clientCert: certs.client.certPem, url: new URL('https://127.0.0.1:9/') })).toThrow(/clientCert and clientKey/);
  });

  it('close() gives up on a collector that never answers, after one attempt bounded by the timeout', async () => {
    const collector = await startCollector(certs.server);
    collector.answer = 'hang';
    const { log, entries } = capturingLogger();
    const out = httpsExport({ url: collector.url, ca: certs.ca.certPem, instance: 'gw-1', log, timeoutMs: 250, retryMinMs: 10 });
    out.send(lines(1, 1)[0]!);
    await eventually(() => collector.received.length > 0, 15_000, 'the collector read the request', 5);
    await expect(out.close()).resolves.toBeUndefined();
    expect(String(failures(entries)[0]?.['err'])).toMatch(/no answer within 250 ms/);
    expect(failures(entries).at(-1)).toMatchObject({ at_close: true, queued: 1 });
  });

  it('close() cancels a pending retry and makes one final attempt', async () => {
    const collector = await startCollector(certs.server);
    collector.answer = 503;
    const { log, entries } = capturingLogger();
    // A retry a minute away: only close() can send the line again within this test.
    const out = httpsExport({ url: collector.url, ca: certs.ca.certPem, instance: 'gw-1', log, retryMinMs: 60_000 });
    const line = lines(1, 1)[0]!;
    out.send(line);
    await eventually(() => failures(entries).length > 0, 15_000, 'the 503 logged', 5);
    collector.answer = 200;
    await out.close();
    expect(collector.received.map((r) => r.status)).toEqual([503, 200]);
    expect(collector.accepted()).toBe(line);
    // Closed: later lines are ignored, not queued behind a finished export.
    out.send(lines(2, 2)[0]!);
    expect(collector.received).toHaveLength(2);
  });
});

describe('directoryExport', () => {
  it('appends the lines in order to <dir>/<instance>.checkpoints.jsonl, mode 0600', async () => {
    const dir = mkdtempSync(join(root, 'dir-'));
    const { log, entries } = capturingLogger();
    const out = directoryExport(dir, 'gw-1', log);
    const sent = lines(1, 20);
    for (const line of sent) out.send(line);
    await out.close();
    const file = join(dir, 'gw-1.checkpoints.jsonl');
    expect(readFileSync(file, 'utf8')).toBe(sent.join(''));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(entries).toEqual([]);
  });

  it('a failed append is logged, never thrown', async () => {
    const { log, entries } = capturingLogger();
    const target = join(root, 'missing', 'gw-1.checkpoints.jsonl');
    const out = directoryExport(join(root, 'missing'), 'gw-1', log);
    expect(() => out.send(lines(1, 1)[0]!)).not.toThrow();
    await expect(out.close()).resolves.toBeUndefined();
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ level: ERROR, msg: 'audit checkpoint export failed', target });
    expect(String(entries[0]?.['err'])).toMatch(/ENOENT/);
  });
});

describe('combine', () => {
  it('sends each line to every export; close() waits for all', async () => {
    const collector = await startCollector(certs.server);
    const dir = mkdtempSync(join(root, 'combined-'));
    const { log } = capturingLogger();
    const out = combine(directoryExport(dir, 'gw-1', log), httpsExport({ url: collector.url, ca: certs.ca.certPem, instance: 'gw-1', log }));
    const sent = lines(1, 3);
    for (const line of sent) out.send(line);
    await out.close();
    expect(readFileSync(join(dir, 'gw-1.checkpoints.jsonl'), 'utf8')).toBe(sent.join(''));
    expect(collector.accepted()).toBe(sent.join(''));
  });
});
