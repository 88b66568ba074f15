// The ceiling for the gateway: a bare TLS reverse proxy on the same undici API (Pool.dispatch with a handler), no checks.
// Usage: node bare-proxy.js <upstream-port> <cert.pem> <key.pem>
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { Pool, type Dispatcher } from 'undici';

const [upstreamPort, certFile, keyFile] = process.argv.slice(2);
if (upstreamPort === undefined || certFile === undefined || keyFile === undefined) {
  process.stderr.write('usage: bare-proxy <upstream-port> <cert.pem> <key.pem>\n');
  process.exit(64);
}
const pool = new Pool(`http://127.0.0.1:${upstreamPort}`, { connections: 64, pipelining: 1, keepAliveTimeout: 4_000 });
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te', 'trailer']);

function forward(req: IncomingMessage, res: ServerResponse): void {
  const headers: Record<string, string | string[]> = {};
  for (const name in req.headers) {
    const value = req.headers[name];
    if (value !== undefined && !HOP.has(name)) headers[name] = value;
  }
  const handler: Dispatcher.DispatchHandler = {
    // A client that leaves mid-response (every load generator does at the end of a run) must free its upstream request:
    // a paused response whose 'drain' never comes would hold the pooled connection forever, and after a few rounds every
    // connection (this proxy stalled that way until it aborted them).
    onRequestStart(controller) {
      res.once('close', () => {
        if (!res.writableFinished) controller.abort(new Error('client closed the connection'));
      });
    },
    onResponseStart(controller, statusCode, upstreamHeaders) {
      const out: Record<string, string | string[]> = {};
      for (const name in upstreamHeaders) {
        const value = upstreamHeaders[name];
        if (value !== undefined && !HOP.has(name)) out[name] = value;
      }
      res.writeHead(statusCode, out);
      res.on('drain', () => controller.resume());
    },
    onResponseData(controller, chunk) {
      if (!res.write(chunk)) controller.pause();
    },
    onResponseEnd() {
      res.end();
    },
    onResponseError(_controller, error) {
      if (res.destroyed) return;
      if (!res.headersSent) res.writeHead(502);
      res.end(String(error.message));
    },
  };
  pool.dispatch(
    { path: req.url ?? '/', method: (req.method ?? 'GET') as Dispatcher.HttpMethod, headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req },
    handler,
  );
}

const server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile), ALPNProtocols: ['http/1.1'] }, forward);
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
