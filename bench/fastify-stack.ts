// Bench peer: fastify 5 with @fastify/reply-from (undici underneath), the same jose JWT verification and a per-subject
// rate limit (rate-limiter-flexible in memory), on the bearer route, over TLS.
// Usage: node fastify-stack.js <settings.json>  (bench/peer-checks.ts)
import replyFrom from '@fastify/reply-from';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { readFileSync } from 'node:fs';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { announce, bearerCheck, readPeerSettings } from './peer-checks.js';

const settings = readPeerSettings();
const check = bearerCheck(settings);
const limiter = new RateLimiterMemory({ points: 10_000_000, duration: 1 });
const app = Fastify({ https: { cert: readFileSync(settings.cert), key: readFileSync(settings.key) }, logger: false, keepAliveTimeout: 60_000 });
await app.register(replyFrom, { base: `http://127.0.0.1:${settings.upstreamPort}`, undici: { connections: 64, pipelining: 1 } });
const route = {
  preHandler: async (request: FastifyRequest, reply: FastifyReply) => {
    const outcome = await check(request.headers.authorization);
    if ('status' in outcome) return reply.code(outcome.status).send();
    try {
      await limiter.consume(outcome.subject);
    } catch {
      return reply.code(429).send();
    }
    return undefined;
  },
  handler: (request: FastifyRequest, reply: FastifyReply) => reply.from(request.url),
};
// `/jwt/*` does not match `/jwt` itself.
app.get('/jwt', route);
app.get('/jwt/*', route);
await app.listen({ host: '127.0.0.1', port: 0 });
const address = app.server.address();
announce(typeof address === 'object' && address !== null ? address.port : 0);
