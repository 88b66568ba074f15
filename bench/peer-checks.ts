// The checks the bench's peer stacks (express, fastify) run on the bearer route, as a Node user would write them with
// jose: the JWT verified against the gateway's published keys (issuer, audience, algorithm, typ), then the scope. The
// same for both stacks, so they differ only in their framework, rate limiter and proxy.
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';

/** What a peer stack is started with: `node <stack>.js <settings.json>`. */
export interface PeerSettings {
  readonly upstreamPort: number;
  readonly cert: string;
  readonly key: string;
  /** The gateway's JWKS, as its /.well-known/jwks.json serves it. */
  readonly jwks: JSONWebKeySet;
  readonly issuer: string;
  readonly audience: string;
  readonly scope: string;
}

export function readPeerSettings(): PeerSettings {
  const file = process.argv[2];
  if (file === undefined) {
    process.stderr.write('usage: <stack> <settings.json>\n');
    process.exit(64);
  }
  return JSON.parse(readFileSync(file, 'utf8')) as PeerSettings;
}

/** A bearer token checked: its subject, or the status to refuse with (401 no or bad token, 403 missing scope). */
export function bearerCheck(settings: PeerSettings): (authorization: string | undefined) => Promise<{ subject: string } | { status: 401 | 403 }> {
  const keys = createLocalJWKSet(settings.jwks);
  const options = { issuer: settings.issuer, audience: settings.audience, algorithms: ['EdDSA', 'ES256'], typ: 'at+jwt' };
  return async (authorization) => {
    if (authorization === undefined || !authorization.startsWith('Bearer ')) return { status: 401 };
    try {
      const { payload } = await jwtVerify(authorization.slice(7), keys, options);
      const scopes = typeof payload['scope'] === 'string' ? payload['scope'].split(' ') : [];
      if (!scopes.includes(settings.scope) || payload.sub === undefined) return { status: 403 };
      return { subject: payload.sub };
    } catch {
      return { status: 401 };
    }
  };
}

/** Prints the `{"port": N}` line the bench waits for, and exits cleanly on SIGTERM. */
export function announce(port: number): void {
  process.stdout.write(`${JSON.stringify({ port })}\n`);
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}
