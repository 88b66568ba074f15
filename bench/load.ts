// The load generator, in a process of its own so its work never shares an event loop with the bench's bookkeeping:
// autocannon over keep-alive TLS (HTTP/1.1) against one target, then one JSON line with what it measured.
// Usage: node load.js <options.json>  (see LoadOptions; the tokens, if any, are in the file too)
import autocannon from 'autocannon';
import { readFileSync } from 'node:fs';
import { dpopProof, type DpopHolder } from './tokens.js';

export interface LoadOptions {
  readonly port: number;
  readonly path: string;
  readonly seconds: number;
  readonly connections: number;
  /** PEM client certificate and key (mTLS routes; sent on every connection alike). */
  readonly cert: string;
  readonly key: string;
  /** With tokens, each connection cycles through them, one bearer token per request. */
  readonly tokens: readonly string[];
  /** Requests per second in all (autocannon's overallRate); absent = as fast as the target answers. */
  readonly rate?: number;
  /** Default GET without a body. */
  readonly method?: 'GET' | 'POST';
  readonly body?: string;
  /** Sent with every request, beside Host. */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * DPoP traffic (RFC 9449): each request carries `Authorization: DPoP <token>` of one of these holders, in turn, and a
   * fresh proof signed by its key — as real clients send. `proofs` are made before the clock starts (never one twice).
   */
  readonly dpop?: { readonly holders: readonly DpopHolder[]; readonly proofs: number };
}

export interface LoadResult {
  readonly total: number;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly errors: number;
  readonly non2xx: number;
}

const file = process.argv[2];
if (file === undefined) {
  process.stderr.write('usage: load <options.json>\n');
  process.exit(64);
}
const options = JSON.parse(readFileSync(file, 'utf8')) as LoadOptions;
const dpopRequests = options.dpop === undefined ? undefined : await dpopTraffic(options.dpop, `https://localhost${options.path}`);
const result = await autocannon({
  url: `https://127.0.0.1:${options.port}${options.path}`,
  connections: options.connections,
  duration: options.seconds,
  headers: { host: 'localhost', ...options.headers },
  ...(options.method !== undefined ? { method: options.method } : {}),
  ...(options.body !== undefined ? { body: options.body } : {}),
  tlsOptions: { cert: options.cert, key: options.key, servername: 'localhost', ALPNProtocols: ['http/1.1'] },
  ...(options.rate !== undefined ? { overallRate: options.rate } : {}),
  // Static requests are serialized once by autocannon, so cycling through tokens costs the load generator nothing extra.
  ...(options.tokens.length > 0 ? { requests: options.tokens.map((token) => ({ headers: { host: 'localhost', authorization: `Bearer ${token}` } })) } : {}),
  ...(dpopRequests !== undefined ? { requests: [dpopRequests] } : {}),
});
const measured: LoadResult = {
  total: result.requests.total,
  rps: result.requests.average,
  p50: result.latency.p50,
  p99: result.latency.p99,
  errors: result.errors + result.timeouts,
  non2xx: result.non2xx,
};
process.stdout.write(`${JSON.stringify(measured)}\n`);

/** Proofs made in advance, handed out one per request; past the last one the generator stops being a real client. */
async function dpopTraffic(dpop: NonNullable<LoadOptions['dpop']>, htu: string): Promise<autocannon.Request> {
  const made: Array<{ readonly authorization: string; readonly dpop: string }> = [];
  for (let i = 0; i < dpop.proofs; i++) {
    const holder = dpop.holders[i % dpop.holders.length];
    if (holder === undefined) throw new Error('DPoP traffic needs at least one holder');
    made.push({ authorization: `DPoP ${holder.token}`, dpop: await dpopProof(holder, 'GET', htu, holder.token) });
  }
  let next = 0;
  return {
    setupRequest: (request: autocannon.Request): autocannon.Request => {
      const proof = made[next++ % made.length];
      return { ...request, headers: { ...request.headers, host: 'localhost', authorization: proof?.authorization ?? '', dpop: proof?.dpop ?? '' } };
    },
  };
}
