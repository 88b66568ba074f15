// Bench peer: the stack a Node user would build instead of the gateway — express 5, jose JWT verification,
// express-rate-limit per subject, http-proxy-middleware with a keep-alive agent — on the bearer route, over TLS.
// Usage: node express-stack.js <settings.json>  (bench/peer-checks.ts)
import express, { type NextFunction, type Request, type Response } from 'express';
import { rateLimit } from 'express-rate-limit';
import { createProxyMiddleware } from 'http-proxy-middleware';
import { readFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { announce, bearerCheck, readPeerSettings } from './peer-checks.js';

const settings = readPeerSettings();
const check = bearerCheck(settings);
const app = express();
app.disable('x-powered-by');
app.use('/jwt', (req: Request, res: Response, next: NextFunction) => {
  check(req.headers.authorization).then((outcome) => {
    if ('status' in outcome) {
      res.status(outcome.status).end();
      return;
    }
    res.locals['subject'] = outcome.subject;
    next();
  }, next);
});
app.use(
  '/jwt',
  rateLimit({
    windowMs: 1000,
    limit: 10_000_000,
    keyGenerator: (_req, res) => String(res.locals['subject']),
    standardHeaders: 'draft-8',
    legacyHeaders: false,
  }),
);
// Without a keep-alive agent http-proxy-middleware opens a connection per request (ECOSYSTEM.md).
app.use(
  createProxyMiddleware({
    target: `http://127.0.0.1:${settings.upstreamPort}`,
    pathFilter: '/jwt',
    agent: new Agent({ keepAlive: true, maxSockets: 64 }),
  }),
);
app.use((_req: Request, res: Response) => {
  res.status(404).end();
});

const server = createServer({ cert: readFileSync(settings.cert), key: readFileSync(settings.key), ALPNProtocols: ['http/1.1'] }, app);
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => announce((server.address() as AddressInfo).port));
