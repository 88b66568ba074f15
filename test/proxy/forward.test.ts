// The reverse proxy end to end: path/host/query forwarding, request framing towards the upstream, streaming both ways
// with backpressure, upstream failures (REL-05), client aborts (RL-03), TLS to the upstream (TLS-15), 1xx, and echo.
import { route, type RouteInput, type RouteOptions } from '../support/routes.js';
import { eventually } from '../support/eventually.js';
import { readRecords } from '../../src/audit/read.js';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { constants as h2constants, type ClientHttp2Session, type IncomingHttpHeaders as H2Headers, type OutgoingHttpHeaders } from 'node:http2';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closedPort } from '../support/harness.js';
import { request } from 'undici';
import { createCertificateAuthority, issueServerCertificate } from '../../src/tls/ca.js';
import { buildConfig } from '../../src/config/load.js';
import {
  h2Request,
  h2Session,
  openTls,
  problemCode,
  rawHttp1,
  startGateway,
  startUpstream,
  type RecordedRequest,
  type TestGateway,
  type TestUpstream,
} from '../support/harness.js';

const MB = 1024 * 1024;
const CHUNK = 64 * 1024;
/** 1 MiB of random bytes; every 64 KiB chunk is a slice of it stamped with its index, so no two chunks are equal. */
const POOL = randomBytes(MB);

function chunkAt(index: number): Buffer {
  const offset = (index * CHUNK) % MB;
  const chunk = Buffer.from(POOL.subarray(offset, offset + CHUNK));
  chunk.writeUInt32BE(index, 0);
  return chunk;
}

function rawCount(seen: RecordedRequest, name: string): number {
  let n = 0;
  for (let i = 0; i < seen.rawHeaders.length; i += 2) if ((seen.rawHeaders[i] ?? '').toLowerCase() === name) n++;
  return n;
}

class Deferred {
  resolve: () => void = () => undefined;
  readonly promise = new Promise<void>((resolve) => {
    this.resolve = resolve;
  });
}

/** Rejects when `promise` has not settled within `ms` (a deadlock guard, never a performance assertion). */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves true on 'drain', false on 'close'; removes both listeners either way. */
function drainedOrClosed(res: ServerResponse): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (drained: boolean) => (): void => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(drained);
    };
    const onDrain = done(true);
    const onClose = done(false);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}

/** Writes chunks [from, to) with the upstream's own backpressure respected; false when the response closed first. */
async function writeChunks(
  res: ServerResponse,
  from: number,
  to: number,
  hash: ReturnType<typeof createHash>,
  onAccepted: (n: number) => void,
): Promise<boolean> {
  for (let i = from; i < to; i++) {
    if (res.destroyed) return false;
    const chunk = chunkAt(i);
    hash.update(chunk);
    onAccepted(chunk.length);
    if (!res.write(chunk) && !(await drainedOrClosed(res))) return false;
  }
  return true;
}

interface H2Outcome {
  readonly status: number;
  readonly headers: H2Headers;
  readonly body: Buffer;
  /** True when the stream ended cleanly (END_STREAM), false when it was reset or errored. */
  readonly ended: boolean;
  readonly rstCode: number | undefined;
}

function h2Outcome(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: Buffer | string): Promise<H2Outcome> {
  return new Promise((resolve) => {
    const stream = session.request(headers, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let responseHeaders: H2Headers = {};
    let ended = false;
    stream.on('response', (h) => {
      responseHeaders = h;
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      ended = true;
    });
    stream.on('error', () => undefined);
    stream.on('close', () =>
      resolve({ status: Number(responseHeaders[':status'] ?? 0), headers: responseHeaders, body: Buffer.concat(chunks), ended, rstCode: stream.rstCode }),
    );
    if (body !== undefined) stream.end(body);
  });
}

// --- the behaviour upstream: one plain HTTP server whose answer depends on the path ---

const DOWNLOAD_CHUNKS = (20 * MB) / CHUNK;
const BIG_CHUNKS = (64 * MB) / CHUNK;

interface Behaviour {
  readonly url: string;
  /** Requests received per first path segment. */
  readonly seen: Map<string, number>;
  /** Held responses (/hold) and how many of them closed without an answer. */
  held: ServerResponse[];
  heldClosed: number;
  upload: { firstData: Deferred; sha: string; bytes: number };
  download: { clientGotData: Deferred; sha: string; done: boolean };
  big: { accepted: number; done: boolean; sha: string };
  close(): Promise<void>;
}

async function startBehaviour(): Promise<Behaviour> {
  const state: Behaviour = {
    url: '',
    seen: new Map(),
    held: [],
    heldClosed: 0,
    upload: { firstData: new Deferred(), sha: '', bytes: 0 },
    download: { clientGotData: new Deferred(), sha: '', done: false },
    big: { accepted: 0, done: false, sha: '' },
    close: async () => undefined,
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = req.url ?? '/';
    const kind = path.split('/')[1] ?? '';
    state.seen.set(kind, (state.seen.get(kind) ?? 0) + 1);
    switch (kind) {
      case 'hold':
        state.held.push(res);
        res.once('close', () => {
          if (!res.writableFinished) state.heldClosed++;
        });
        req.resume();
        return;
      case 'stall':
        // Headers and a first chunk, then nothing: only the gateway's body timeout can end this.
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('partial-');
        req.resume();
        return;
      case 'destroy':
        req.socket.destroy();
        return;
      case 'hints':
        req.resume();
        res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
        await sleep(20);
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('final answer');
        return;
      case 'upload': {
        const hash = createHash('sha256');
        let bytes = 0;
        req.on('data', (c: Buffer) => {
          if (bytes === 0) state.upload.firstData.resolve();
          bytes += c.length;
          hash.update(c);
        });
        await once(req, 'end');
        state.upload.sha = hash.digest('hex');
        state.upload.bytes = bytes;
        const rawHeaders = req.rawHeaders;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ sha: state.upload.sha, bytes, rawHeaders }));
        return;
      }
      case 'download': {
        req.resume();
        const hash = createHash('sha256');
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(DOWNLOAD_CHUNKS * CHUNK) });
        if (!(await writeChunks(res, 0, DOWNLOAD_CHUNKS / 2, hash, () => undefined))) return;
        // The second half is only sent once the client has received bytes: a gateway that buffers the whole response deadlocks here.
        const signalled = await Promise.race([state.download.clientGotData.promise.then(() => true), sleep(10_000).then(() => false)]);
        if (!signalled) {
          res.destroy();
          return;
        }
        if (!(await writeChunks(res, DOWNLOAD_CHUNKS / 2, DOWNLOAD_CHUNKS, hash, () => undefined))) return;
        state.download.sha = hash.digest('hex');
        state.download.done = true;
        res.end();
        return;
      }
      case 'big': {
        req.resume();
        const hash = createHash('sha256');
        const chunks = Number(new URL(path, 'http://x').searchParams.get('chunks') ?? BIG_CHUNKS);
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        if (!(await writeChunks(res, 0, chunks, hash, (n) => (state.big.accepted += n)))) return;
        state.big.sha = hash.digest('hex');
        state.big.done = true;
        res.end();
        return;
      }
      default:
        req.resume();
        res.writeHead(404);
        res.end();
    }
  };
  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.keepAliveTimeout = 10_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}

/** Accepts TCP connections and reads, but never answers. */
async function startSilent(): Promise<{ url: string; connections: () => number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  let connections = 0;
  const server: NetServer = createNetServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    socket.resume();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    connections: () => connections,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

interface TlsUpstream {
  readonly url: string;
  readonly caFile: string;
  readonly otherCaFile: string;
  requests: number;
  close(): Promise<void>;
}

/** An HTTPS upstream whose certificate is issued by its own CA (not the gateway's client CA, not a public root). */
async function startTlsUpstream(dir: string): Promise<TlsUpstream> {
  const ca = await createCertificateAuthority({ commonName: 'Upstream Test CA' });
  const otherCa = await createCertificateAuthority({ commonName: 'Unrelated Test CA' });
  const leaf = await issueServerCertificate(ca, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  const caFile = join(dir, 'upstream-ca.pem');
  const otherCaFile = join(dir, 'other-ca.pem');
  writeFileSync(caFile, ca.certPem);
  writeFileSync(otherCaFile, otherCa.certPem);
  const state = { requests: 0 };
  const server = createHttpsServer({ cert: leaf.certPem, key: leaf.keyPem }, (req, res) => {
    state.requests++;
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ tls: true, url: req.url }));
  });
  server.on('tlsClientError', () => undefined);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    url: `https://127.0.0.1:${port}`,
    caFile,
    otherCaFile,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}

const proxy = (id: string, prefix: string, upstream: string, extra: RouteOptions['proxy'] = {}, more: RouteOptions = {}): RouteInput =>
  route(id, prefix, { methods: ['GET', 'POST', 'PUT'], to: upstream, proxy: extra, ...more });

describe('reverse proxy', () => {
  let gw: TestGateway;
  let app: TestUpstream;
  let behave: Behaviour;
  let silent: Awaited<ReturnType<typeof startSilent>>;
  let tlsUp: TlsUpstream;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gatehouse-forward-'));
    [app, behave, silent, tlsUp] = await Promise.all([startUpstream(), startBehaviour(), startSilent(), startTlsUpstream(dir)]);
    const deadPort = await closedPort();
    gw = await startGateway((base) => ({
      ...base,
      limits: { new_connections_per_ip: { points: 10_000, duration_s: 10 } },
      upstreams: {
        app: { url: app.url },
        behave: { url: behave.url },
        'behave-stall': { url: behave.url, body_timeout_ms: 500 },
        silent: { url: silent.url, headers_timeout_ms: 500 },
        closed: { url: `http://127.0.0.1:${deadPort}`, connect_timeout_ms: 1000 },
        'tls-ok': { url: tlsUp.url, ca: tlsUp.caFile },
        'tls-wrongca': { url: tlsUp.url, ca: tlsUp.otherCaFile },
      },
      routes: [
        ...base.routes,
        route('whoami', '/whoami', { authn: ['mtls'] }),
        route('echo-small', '/echo-small', { methods: ['GET', 'POST'], body_limit_bytes: 1000 }),
        proxy('app', '/app', 'app'),
        proxy('app-small', '/app-small', 'app', {}, { body_limit_bytes: 1000 }),
        proxy('strip', '/strip', 'app', { strip_prefix: true }),
        proxy('strip-slash', '/s2/', 'app', { strip_prefix: true }),
        proxy('host', '/host', 'app', { preserve_host: true }),
        proxy('hold', '/hold', 'behave'),
        proxy('destroy', '/destroy', 'behave'),
        proxy('hints', '/hints', 'behave'),
        proxy('upload', '/upload', 'behave', {}, { body_limit_bytes: 64 * MB }),
        proxy('download', '/download', 'behave'),
        proxy('big', '/big', 'behave'),
        proxy('stall', '/stall', 'behave-stall'),
        proxy('silent', '/silent', 'silent'),
        proxy('closed', '/closed', 'closed'),
        proxy('tls-ok', '/tls-ok', 'tls-ok'),
        proxy('tls-wrongca', '/tls-wrongca', 'tls-wrongca'),
      ],
    }));
  });

  afterAll(async () => {
    await gw?.stop();
    await Promise.all([app?.close(), behave?.close(), silent?.close(), tlsUp?.close()]);
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const lastSeen = (): RecordedRequest => {
    const seen = app.requests.at(-1);
    if (seen === undefined) throw new Error('the upstream received no request');
    return seen;
  };

  describe('path, host and query', () => {
    it('forwards the query string byte for byte and the canonical path', async () => {
      const query = 'b=2&a=1&a=%2F&sp=%20x&plus=a+b&empty=&flag&_method=DELETE';
      const res = await request(`${gw.origin}/app/x/./y/../q?${query}`, { dispatcher: gw.agent() });
      expect(res.statusCode).toBe(200);
      await res.body.text();
      expect(lastSeen().url).toBe(`/app/x/q?${query}`);
      expect(lastSeen().method).toBe('GET');
    });

    it('strip_prefix removes the route prefix (and keeps the query)', async () => {
      const cases: Array<[string, string]> = [
        ['/strip/a/b?x=1', '/a/b?x=1'],
        ['/strip', '/'],
        ['/strip?only=query', '/?only=query'],
        ['/strip/', '/'],
        ['/s2/a', '/a'],
      ];
      for (const [target, expected] of cases) {
        const res = await request(`${gw.origin}${target}`, { dispatcher: gw.agent() });
        expect(res.statusCode, target).toBe(200);
        await res.body.text();
        expect(lastSeen().url, target).toBe(expected);
      }
      // Without strip_prefix the path is forwarded whole.
      const res = await request(`${gw.origin}/app/a/b`, { dispatcher: gw.agent() });
      await res.body.text();
      expect(lastSeen().url).toBe('/app/a/b');
    });

    it("preserve_host sends the client's Host; otherwise the upstream's own authority", async () => {
      const raw = await rawHttp1(gw.port, gw.certs, 'GET /host/x HTTP/1.1\r\nHost: app.example.test:8443\r\nConnection: close\r\n\r\n');
      expect(raw.status).toBe(200);
      expect(lastSeen().headers.host).toBe('app.example.test:8443');
      expect(rawCount(lastSeen(), 'host')).toBe(1);

      const plain = await rawHttp1(gw.port, gw.certs, 'GET /app/x HTTP/1.1\r\nHost: app.example.test:8443\r\nConnection: close\r\n\r\n');
      expect(plain.status).toBe(200);
      expect(lastSeen().headers.host).toBe(new URL(app.url).host);
      expect(lastSeen().headers['x-forwarded-host']).toBe('app.example.test:8443');
    });
  });

  describe('upstream request framing: never both Content-Length and Transfer-Encoding', () => {
    it('POST with Content-Length → the upstream gets the same Content-Length and no Transfer-Encoding', async () => {
      const res = await request(`${gw.origin}/app/cl`, { dispatcher: gw.agent(), method: 'POST', body: 'hello world' });
      expect(res.statusCode).toBe(200);
      await res.body.text();
      const seen = lastSeen();
      expect(seen.body.toString()).toBe('hello world');
      expect(rawCount(seen, 'content-length')).toBe(1);
      expect(seen.headers['content-length']).toBe('11');
      expect(rawCount(seen, 'transfer-encoding')).toBe(0);
    });

    it('chunked POST → the upstream gets chunked and no Content-Length', async () => {
      // The body arrives in two flights, so the gateway must forward it before knowing its length.
      const socket = await openTls(gw.port, gw.certs);
      const received: Buffer[] = [];
      socket.on('data', (c: Buffer) => received.push(c));
      socket.on('error', () => undefined);
      const closed = once(socket, 'close');
      socket.write('POST /app/chunked HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n');
      await sleep(100);
      socket.write('6\r\n world\r\n0\r\n\r\n');
      await within(closed, 5000, 'the response to the chunked POST');
      expect(Buffer.concat(received).toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
      const seen = lastSeen();
      expect(seen.url).toBe('/app/chunked');
      expect(seen.body.toString()).toBe('hello world');
      expect(rawCount(seen, 'transfer-encoding')).toBe(1);
      expect(seen.headers['transfer-encoding']).toBe('chunked');
      expect(rawCount(seen, 'content-length')).toBe(0);
    });

    it('chunked POST already complete on arrival → exactly one framing header that matches the body', async () => {
      const res = await rawHttp1(
        gw.port,
        gw.certs,
        'POST /app/chunked-small HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n',
      );
      expect(res.status).toBe(200);
      const seen = lastSeen();
      expect(seen.url).toBe('/app/chunked-small');
      expect(seen.body.toString()).toBe('hello world');
      // undici may frame a body it already holds whole with Content-Length; never with both headers.
      expect(rawCount(seen, 'content-length') + rawCount(seen, 'transfer-encoding')).toBe(1);
      if (rawCount(seen, 'content-length') === 1) expect(seen.headers['content-length']).toBe('11');
    });

    it('HTTP/2 POST without Content-Length → a well-framed upstream request with the whole body', async () => {
      const session = await h2Session(gw.port, gw.certs);
      try {
        const res = await h2Request(session, { ':method': 'POST', ':path': '/app/h2-nocl', 'content-type': 'text/plain' }, 'h2 body without length');
        expect(res.status).toBe(200);
        const seen = lastSeen();
        expect(seen.url).toBe('/app/h2-nocl');
        expect(seen.body.toString()).toBe('h2 body without length');
        expect(rawCount(seen, 'content-length') + rawCount(seen, 'transfer-encoding')).toBe(1);

        const withLength = await h2Request(session, { ':method': 'POST', ':path': '/app/h2-cl', 'content-length': '7' }, 'h2 body');
        expect(withLength.status).toBe(200);
        expect(lastSeen().body.toString()).toBe('h2 body');
        expect(lastSeen().headers['content-length']).toBe('7');
        expect(rawCount(lastSeen(), 'transfer-encoding')).toBe(0);
      } finally {
        session.close();
      }
    });

    it('H1-15 a streamed (chunked) body over the route limit → 413, the upstream never gets a complete request', async () => {
      const before = app.requests.length;
      const chunk = 'a'.repeat(600);
      const res = await rawHttp1(
        gw.port,
        gw.certs,
        `POST /app-small/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n${chunk}\r\n258\r\n${chunk}\r\n0\r\n\r\n`,
      );
      expect(res.status).toBe(413);
      expect(problemCode(res.text)).toBe('payload_too_large');
      expect(app.requests.length).toBe(before);
    });
  });

  describe('streaming', () => {
    it('streams a 20 MB upload to the upstream before the client has finished sending; bytes are identical', async () => {
      behave.upload = { firstData: new Deferred(), sha: '', bytes: 0 };
      const total = (20 * MB) / CHUNK;
      const clientHash = createHash('sha256');
      const firstData = behave.upload.firstData.promise;
      async function* body(): AsyncGenerator<Buffer> {
        for (let i = 0; i < total; i++) {
          // Halfway, wait until the upstream has bytes: a gateway that buffers the whole body would never get here.
          if (i === total / 2) await within(firstData, 10_000, 'upstream receiving the first upload bytes');
          const chunk = chunkAt(i);
          clientHash.update(chunk);
          yield chunk;
        }
      }
      const res = await request(`${gw.origin}/upload/x`, { dispatcher: gw.agent(), method: 'POST', body: Readable.from(body()) });
      expect(res.statusCode).toBe(200);
      const answer = (await res.body.json()) as { sha: string; bytes: number; rawHeaders: string[] };
      expect(answer.bytes).toBe(20 * MB);
      expect(answer.sha).toBe(clientHash.digest('hex'));
      const names = answer.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
      expect(names.filter((n) => n === 'content-length' || n === 'transfer-encoding').length).toBe(1);
    });

    it('streams a 20 MB download: the client gets bytes before the upstream has finished; bytes are identical', async () => {
      behave.download = { clientGotData: new Deferred(), sha: '', done: false };
      const res = await request(`${gw.origin}/download/x`, { dispatcher: gw.agent() });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-length']).toBe(String(20 * MB));
      const hash = createHash('sha256');
      let bytes = 0;
      let upstreamDoneAtFirstChunk: boolean | undefined;
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        if (upstreamDoneAtFirstChunk === undefined) {
          upstreamDoneAtFirstChunk = behave.download.done;
          behave.download.clientGotData.resolve();
        }
        hash.update(chunk);
        bytes += chunk.length;
      }
      expect(upstreamDoneAtFirstChunk).toBe(false);
      expect(behave.download.done).toBe(true);
      expect(bytes).toBe(20 * MB);
      expect(hash.digest('hex')).toBe(behave.download.sha);
    });

    /** Waits until the upstream's accepted byte count stops moving (or it finished); returns whether it finished. */
    async function upstreamStallsOrFinishes(): Promise<boolean> {
      let last = -1;
      let stableSince = Date.now();
      const deadline = Date.now() + 10_000;
      while (!behave.big.done && Date.now() - stableSince < 400 && Date.now() < deadline) {
        await sleep(50);
        if (behave.big.accepted !== last) {
          last = behave.big.accepted;
          stableSince = Date.now();
        }
      }
      return behave.big.done;
    }

    it('backpressure (HTTP/1.1): a client that stops reading stalls the upstream; the transfer then completes intact', async () => {
      behave.big = { accepted: 0, done: false, sha: '' };
      const res = await request(`${gw.origin}/big/x`, { dispatcher: gw.agent() });
      expect(res.statusCode).toBe(200);
      const iterator = (res.body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
      const hash = createHash('sha256');
      let bytes = 0;
      const first = await iterator.next();
      expect(first.done).toBe(false);
      hash.update(first.value as Buffer);
      bytes += (first.value as Buffer).length;
      // The client reads nothing now: with backpressure honoured end to end the upstream must get stuck well before 64 MB.
      expect(await upstreamStallsOrFinishes()).toBe(false);
      expect(behave.big.accepted).toBeLessThan(64 * MB);
      for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) {
        hash.update(next.value as Buffer);
        bytes += (next.value as Buffer).length;
      }
      expect(bytes).toBe(64 * MB);
      expect(behave.big.done).toBe(true);
      expect(hash.digest('hex')).toBe(behave.big.sha);
    });

    it('backpressure (HTTP/2): a paused stream stalls the upstream; the transfer then completes intact', async () => {
      behave.big = { accepted: 0, done: false, sha: '' };
      const chunks = (32 * MB) / CHUNK;
      const session = await h2Session(gw.port, gw.certs);
      try {
        const stream = session.request({ ':method': 'GET', ':path': `/big/x?chunks=${chunks}` });
        const hash = createHash('sha256');
        let bytes = 0;
        const firstData = new Deferred();
        stream.on('data', (c: Buffer) => {
          hash.update(c);
          bytes += c.length;
          if (bytes === c.length) {
            stream.pause();
            firstData.resolve();
          }
        });
        const ended = new Promise<boolean>((resolve) => {
          stream.on('end', () => resolve(true));
          stream.on('error', () => resolve(false));
        });
        await within(firstData.promise, 10_000, 'first response bytes over HTTP/2');
        expect(await upstreamStallsOrFinishes()).toBe(false);
        expect(behave.big.accepted).toBeLessThan(32 * MB);
        stream.resume();
        expect(await ended).toBe(true);
        expect(bytes).toBe(32 * MB);
        expect(hash.digest('hex')).toBe(behave.big.sha);
      } finally {
        session.close();
      }
    });
  });

  describe('completion records (issue #8 Part B): how an admitted request ended, linked to its allow', () => {
    const completionOf = async (requestId: string) => {
      await gw.gateway.audit.flush();
      const records = readRecords(join(gw.dataDir, 'audit'));
      const allow = records.find((r) => r.type === 'decision' && r['request_id'] === requestId);
      const completion = records.find((r) => r.type === 'completion' && r['request_id'] === requestId);
      expect(allow?.['decision']).toBe('allow');
      expect(completion?.seq).toBeGreaterThan(allow?.seq ?? Number.POSITIVE_INFINITY);
      return completion;
    };

    it('a proxied request: the status sent, the upstream outcome and status, bytes in and out, latency', async () => {
      const body = 'x'.repeat(1234);
      const res = await request(`${gw.origin}/app/x`, { method: 'POST', body, dispatcher: gw.agent() });
      const text = await res.body.text();
      expect(res.statusCode).toBe(200);
      const completion = await completionOf(String(res.headers['x-request-id']));
      expect(completion).toMatchObject({
        route: 'app',
        status: 200,
        upstream: 'responded',
        upstream_status: 200,
        code: null,
        bytes_in: 1234,
        bytes_out: Buffer.byteLength(text),
      });
      expect(completion?.['duration_ms']).toBeGreaterThanOrEqual(0);
    });

    it('an upstream that is down: the 502 the client got, and why (the allow alone said nothing of it)', async () => {
      const res = await request(`${gw.origin}/closed/x`, { dispatcher: gw.agent() });
      await res.body.dump();
      expect(res.statusCode).toBe(502);
      expect(await completionOf(String(res.headers['x-request-id']))).toMatchObject({
        status: 502,
        upstream: 'failed',
        upstream_status: null,
        upstream_error: 'ECONNREFUSED',
        code: 'upstream_unavailable',
      });
    });

    it('a built-in service: its status and body bytes', async () => {
      const res = await request(`${gw.origin}/echo-small/x`, { dispatcher: gw.agent() });
      const text = await res.body.text();
      expect(await completionOf(String(res.headers['x-request-id']))).toMatchObject({
        route: 'echo-small',
        status: 200,
        upstream: null,
        bytes_out: Buffer.byteLength(text),
      });
    });
  });

  describe('REL-05 upstream failures', () => {
    it('REL-05 upstream port closed → 502 upstream_unavailable', async () => {
      const res = await request(`${gw.origin}/closed/x`, { dispatcher: gw.agent() });
      expect(res.statusCode).toBe(502);
      expect(problemCode(await res.body.text())).toBe('upstream_unavailable');
    });

    it('REL-05 upstream accepts but never answers (headers_timeout_ms 500) → 504 upstream_timeout', async () => {
      const before = silent.connections();
      const res = await request(`${gw.origin}/silent/x`, { dispatcher: gw.agent() });
      expect(res.statusCode).toBe(504);
      expect(problemCode(await res.body.text())).toBe('upstream_timeout');
      // The upstream was reached: this was the first-byte timeout, not a connect failure.
      expect(silent.connections()).toBeGreaterThan(before);
    });

    it('REL-05 upstream stalls mid-body (body_timeout_ms 500) → the HTTP/1.1 client sees an aborted response, not a clean short body', async () => {
      const res = await request(`${gw.origin}/stall/h1`, { dispatcher: gw.agent() });
      expect(res.statusCode).toBe(200);
      await expect(res.body.text()).rejects.toThrow();
    });

    it('REL-05 upstream stalls mid-body → the HTTP/2 stream is reset, not ended cleanly', async () => {
      const session = await h2Session(gw.port, gw.certs);
      try {
        const outcome = await h2Outcome(session, { ':method': 'GET', ':path': '/stall/h2' });
        expect(outcome.status).toBe(200);
        expect(outcome.body.toString()).toBe('partial-');
        expect(outcome.ended).toBe(false);
        expect(outcome.rstCode).not.toBe(h2constants.NGHTTP2_NO_ERROR);
      } finally {
        session.close();
      }
    });

    it('REL-05 a POST is never retried: upstream drops the connection → 502 and exactly one upstream request', async () => {
      behave.seen.set('destroy', 0);
      const res = await request(`${gw.origin}/destroy/x`, { dispatcher: gw.agent(), method: 'POST', body: 'do-not-repeat' });
      expect(res.statusCode).toBe(502);
      expect(problemCode(await res.body.text())).toBe('upstream_unavailable');
      // Give a retry the chance to show up before counting.
      await sleep(300);
      expect(behave.seen.get('destroy')).toBe(1);
    });
  });

  describe('RL-03 client aborts', () => {
    it('RL-03 50 aborted HTTP/1.1 requests abort their upstream requests; the gateway keeps serving', async () => {
      behave.held = [];
      behave.heldClosed = 0;
      const agent = gw.agent();
      const controllers = Array.from({ length: 50 }, () => new AbortController());
      const pending = controllers.map((c, i) =>
        request(`${gw.origin}/hold/h1-${i}`, { dispatcher: agent, signal: c.signal }).then(
          () => 'answered',
          () => 'aborted',
        ),
      );
      await eventually(() => behave.held.length === 50, 10_000, '50 requests held upstream');
      for (const c of controllers) c.abort();
      expect(new Set(await Promise.all(pending))).toEqual(new Set(['aborted']));
      await eventually(() => behave.heldClosed === 50, 10_000, 'the 50 held upstream requests closed');
      const after = await request(`${gw.origin}/app/after-aborts`, { dispatcher: gw.agent() });
      expect(after.statusCode).toBe(200);
      await after.body.text();
    });

    it('RL-03 50 cancelled HTTP/2 streams abort their upstream requests; the session keeps serving', async () => {
      behave.held = [];
      behave.heldClosed = 0;
      const session = await h2Session(gw.port, gw.certs);
      try {
        const streams = Array.from({ length: 50 }, (_, i) => {
          const s = session.request({ ':method': 'GET', ':path': `/hold/h2-${i}` });
          s.on('error', () => undefined);
          return s;
        });
        await eventually(() => behave.held.length === 50, 10_000, '50 requests held upstream');
        for (const s of streams) s.close(h2constants.NGHTTP2_CANCEL);
        await eventually(() => behave.heldClosed === 50, 10_000, 'the 50 held upstream requests closed');
        const res = await h2Request(session, { ':method': 'GET', ':path': '/app/after-h2-aborts' });
        expect(res.status).toBe(200);
      } finally {
        session.close();
      }
    });
  });

  describe('TLS-15 https upstream', () => {
    it('TLS-15 an upstream certificate from the configured CA is accepted', async () => {
      const before = tlsUp.requests;
      const res = await request(`${gw.origin}/tls-ok/x`, { dispatcher: gw.agent() });
      expect(res.statusCode).toBe(200);
      expect(await res.body.json()).toEqual({ tls: true, url: '/tls-ok/x' });
      expect(tlsUp.requests).toBe(before + 1);
    });

    it('TLS-15 an https upstream without a pinned CA is a configuration error (system roots are never used)', () => {
      const base = {
        tls: { cert: 'a', key: 'b' },
        routes: [route('r', '/r', { to: 'up' })],
      };
      expect(() => buildConfig({ ...base, upstreams: { up: { url: tlsUp.url } } }, '/')).toThrow(/upstreams\.up\.ca: an https upstream needs a pinned CA/);
    });

    for (const [route, label] of [['tls-wrongca', 'with a different pinned CA']] as const) {
      it(`TLS-15 ${label} the upstream certificate is refused → 502, upstream receives nothing, logged`, async () => {
        const before = tlsUp.requests;
        const res = await request(`${gw.origin}/${route}/x`, { dispatcher: gw.agent() });
        expect(res.statusCode).toBe(502);
        expect(problemCode(await res.body.text())).toBe('upstream_unavailable');
        expect(tlsUp.requests).toBe(before);
        expect(gw.logs.some((line) => line.includes(`"upstream":"${route}"`) && line.includes('upstream request failed'))).toBe(true);
        // LOG-11: the TLS failure is in the audit chain, in the request's completion record.
        await gw.gateway.audit.flush();
        const completion = readRecords(join(gw.dataDir, 'audit')).find((r) => r.type === 'completion' && r['request_id'] === res.headers['x-request-id']);
        expect(completion).toMatchObject({
          status: 502,
          upstream: 'failed',
          upstream_error: expect.stringMatching(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT|SELF_SIGNED|CERT/),
        });
      });
    }
  });

  describe('upstream responses the client protocol cannot carry', () => {
    it('a repeated Content-Type (single-value on HTTP/2) → 502 upstream_invalid_response with no upstream header on it', async () => {
      const saved = app.respond;
      app.respond = (_req, res) => {
        res.setHeader('content-type', ['text/plain', 'text/html']);
        res.setHeader('set-cookie', 'upstream-session=1');
        res.setHeader('x-upstream-marker', 'leak');
        res.end('two types');
      };
      const session = await h2Session(gw.port, gw.certs);
      try {
        const outcome = await h2Outcome(session, { ':method': 'GET', ':path': '/app/dup-content-type' });
        expect(outcome.status).toBe(502);
        expect(problemCode(outcome.body.toString())).toBe('upstream_invalid_response');
        expect(outcome.headers['content-type']).toBe('application/problem+json');
        expect(outcome.headers['set-cookie']).toBeUndefined();
        expect(outcome.headers['x-upstream-marker']).toBeUndefined();
        expect(outcome.headers['strict-transport-security']).toMatch(/max-age=63072000/);
        // The session survives for the next request.
        app.respond = saved;
        const next = await h2Request(session, { ':method': 'GET', ':path': '/app/after-dup' });
        expect(next.status).toBe(200);
      } finally {
        app.respond = saved;
        session.close();
      }
    });
  });

  describe('1xx from the upstream', () => {
    it('103 Early Hints from the upstream: HTTP/1.1 and HTTP/2 clients get a valid final response', async () => {
      const res = await request(`${gw.origin}/hints/undici`, { dispatcher: gw.agent() });
      expect(res.statusCode).toBe(200);
      expect(await res.body.text()).toBe('final answer');

      const raw = await rawHttp1(gw.port, gw.certs, 'GET /hints/raw HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
      expect(raw.text).toMatch(/(^|\r\n\r\n)HTTP\/1\.1 200 OK\r\n/);
      expect(raw.text.endsWith('final answer') || raw.text.includes('\r\n\r\nc\r\nfinal answer\r\n0\r\n\r\n')).toBe(true);

      const session = await h2Session(gw.port, gw.certs);
      try {
        const h2 = await h2Request(session, { ':method': 'GET', ':path': '/hints/h2' });
        expect(h2.status).toBe(200);
        expect(h2.body).toBe('final answer');
      } finally {
        session.close();
      }
    });
  });

  describe('echo service', () => {
    it('returns the principal and the canonical request, never Authorization or cookies', async () => {
      const res = await request(`${gw.origin}/public/a/./b/../c?x=1&y=%20`, {
        dispatcher: gw.agent(),
        headers: { authorization: 'Bearer secret-token-value', cookie: 'session=cookie-secret-value', 'x-api-key': 'key-secret-value' },
      });
      expect(res.statusCode).toBe(200);
      const text = await res.body.text();
      for (const secret of ['secret-token-value', 'cookie-secret-value', 'key-secret-value', 'Bearer']) expect(text).not.toContain(secret);
      const body = JSON.parse(text) as { request_id: string; route: string; principal: Record<string, unknown>; request: Record<string, unknown> };
      expect(body.request_id).toBe(res.headers['x-request-id']);
      expect(body.route).toBe('public');
      expect(body.principal).toEqual({ subject: 'anonymous', method: 'anonymous', scopes: [], certificate_thumbprint: null });
      expect(body.request).toMatchObject({ method: 'GET', host: '127.0.0.1', path: '/public/a/c', query: 'x=1&y=%20', protocol: 'h1', client_ip: '127.0.0.1' });
    });

    it('echo on an mTLS route names the certificate principal', async () => {
      const certs = gw.certs;
      const res = await request(`${gw.origin}/whoami`, { dispatcher: gw.agent({ cert: certs.client }) });
      expect(res.statusCode).toBe(200);
      const body = (await res.body.json()) as { principal: { subject: string; method: string; certificate_thumbprint: string } };
      expect(body.principal.subject).toBe('spiffe://gatehouse.local/dev-client');
      expect(body.principal.method).toBe('mtls');
      expect(body.principal.certificate_thumbprint).toMatch(/^[A-Za-z0-9_-]{43}$/);
    });

    it('H1-15 echo: a streamed body over the route limit → 413 payload_too_large (HTTP/1.1 chunked)', async () => {
      const chunk = 'b'.repeat(600);
      const res = await rawHttp1(
        gw.port,
        gw.certs,
        `POST /echo-small/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n${chunk}\r\n258\r\n${chunk}\r\n0\r\n\r\n`,
      );
      expect(res.status).toBe(413);
      expect(problemCode(res.text)).toBe('payload_too_large');
      expect(res.closed).toBe(true);
    });

    it('H1-15 echo: an HTTP/2 body without Content-Length over the route limit → 413 payload_too_large', async () => {
      const session = await h2Session(gw.port, gw.certs);
      try {
        const outcome = await h2Outcome(session, { ':method': 'POST', ':path': '/echo-small/x' }, Buffer.alloc(5000, 0x61));
        expect(outcome.status).toBe(413);
        expect(problemCode(outcome.body.toString())).toBe('payload_too_large');
        // Under the limit the same route answers normally.
        const ok = await h2Request(session, { ':method': 'POST', ':path': '/echo-small/y' }, 'small');
        expect(ok.status).toBe(200);
      } finally {
        session.close();
      }
    });
  });
});
