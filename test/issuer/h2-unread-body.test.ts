// Regression: an HTTP/2 request refused before its body was read (OAuth endpoint 413 / 415 / query string, or any
// pipeline refusal of a request with a body) must end the stream cleanly once the response is out — RST_STREAM(NO_ERROR)
// per RFC 9113 §8.1 — instead of holding a stream slot until the body deadline and then resetting it with INTERNAL_ERROR.
import { constants, type ClientHttp2Session } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h2Session, type TestGateway } from '../support/harness.js';
import { startIssuerGateway, withIssuer } from '../support/issuer.js';

interface Outcome {
  readonly status: number;
  readonly body: string;
  /** END_STREAM arrived: the response was complete before the stream was reset. */
  readonly ended: boolean;
  readonly rstCode: number | undefined;
  readonly closedAfterMs: number;
}

/** Sends headers and `first` body bytes, then keeps the request side open (as a client streaming a large body would). */
function openRequest(session: ClientHttp2Session, path: string, contentType: string, first: Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    const started = Date.now();
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': contentType }, { endStream: false });
    let status = 0;
    let ended = false;
    const chunks: Buffer[] = [];
    stream.on('end', () => {
      ended = true;
    });
    stream.on('response', (headers) => {
      status = Number(headers[':status']);
    });
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('error', () => undefined);
    stream.on('close', () =>
      resolve({ status, body: Buffer.concat(chunks).toString('utf8'), ended, rstCode: stream.rstCode, closedAfterMs: Date.now() - started }),
    );
    stream.write(first);
  });
}

describe('HTTP/2 requests refused with their body unread', () => {
  let gw: TestGateway;
  let session: ClientHttp2Session;
  beforeAll(async () => {
    // A long body deadline: a stream left open would only be reset after 20 s, far beyond what the test waits.
    gw = await startIssuerGateway((base) => withIssuer({ ...base, limits: { request_timeout_ms: 20_000 } }));
    session = await h2Session(gw.port, gw.certs);
  });
  afterAll(async () => {
    session.close();
    await gw.stop();
  });

  it('an OAuth form over 8 KiB: the whole 413 arrives and the stream ends with NO_ERROR at once', async () => {
    const outcome = await openRequest(session, '/oauth2/token', 'application/x-www-form-urlencoded', Buffer.alloc(20_000, 'a'));
    expect(outcome.status).toBe(413);
    expect(outcome.ended).toBe(true);
    expect(JSON.parse(outcome.body)).toMatchObject({ error: 'invalid_request' });
    expect(outcome.rstCode).toBe(constants.NGHTTP2_NO_ERROR);
    expect(outcome.closedAfterMs).toBeLessThan(5_000);
  });

  it('a query string or a wrong content type on an OAuth endpoint (body never read) ends the same way', async () => {
    for (const [path, type, status] of [
      ['/oauth2/token?client_secret=x', 'application/x-www-form-urlencoded', 400],
      ['/oauth2/token', 'application/json', 415],
    ] as const) {
      const outcome = await openRequest(session, path, type, Buffer.from('grant_type=client_credentials'));
      expect(outcome.status).toBe(status);
      expect(outcome.ended).toBe(true);
      expect(outcome.rstCode).toBe(constants.NGHTTP2_NO_ERROR);
      expect(outcome.closedAfterMs).toBeLessThan(5_000);
    }
  });

  it('a pipeline refusal (401 on a bearer route) of a request with a body ends the same way; the session stays usable', async () => {
    const outcome = await openRequest(session, '/api/upload', 'application/octet-stream', Buffer.alloc(1000, 'b'));
    expect(outcome.status).toBe(401);
    expect(outcome.ended).toBe(true);
    expect(outcome.rstCode).toBe(constants.NGHTTP2_NO_ERROR);
    expect(outcome.closedAfterMs).toBeLessThan(5_000);

    const ok = await new Promise<number>((resolve, reject) => {
      const stream = session.request({ ':method': 'GET', ':path': '/public/after' });
      stream.on('response', (headers) => resolve(Number(headers[':status'])));
      stream.on('error', reject);
      stream.resume();
    });
    expect(ok).toBe(200);
  });
});
