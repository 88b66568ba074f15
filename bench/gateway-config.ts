// The gateway the bench and the profiler load: a realistic protected route (mTLS client certificate, deny-by-default
// authz with a subject allow-list, a per-principal quota, the proxy, an audit record and an access-log line per request)
// a bearer route (JWT verification, scope check, the same quota) and a DPoP route (the same, plus a fresh proof per request),
// with Prometheus metrics on (an admin listener). Limits are raised so only the work is measured.
import type { DevCertificatePaths } from '../src/tls/ca.js';

export function benchGatewayConfig(paths: DevCertificatePaths, upstreamPort: number, dataDir: string): Record<string, unknown> {
  return {
    server: { host: '127.0.0.1', port: 0 },
    tls: { cert: paths.serverCert, key: paths.serverKey, client_ca: paths.caCert },
    // Every connection comes from 127.0.0.1: the per-address caps are raised (10 000 idle connections are measured).
    limits: {
      pre_auth_per_ip: { points: 10_000_000, duration_s: 1 },
      max_connections: 20_000,
      max_connections_per_ip: 20_000,
      new_connections_per_ip: { points: 10_000_000, duration_s: 1 },
    },
    quotas: { bench: { points: 10_000_000, duration_s: 1 } },
    upstreams: { app: { url: `http://127.0.0.1:${upstreamPort}`, connections: 64 } },
    // The issuer signs the bearer route's tokens; its client-auth limits are raised so the setup can fetch many tokens.
    issuer: { client_auth: { per_ip: { points: 100_000, duration_s: 60 }, max_queued_hashes: 10_000 } },
    routes: [
      {
        id: 'bench-jwt',
        match: { path_prefix: '/jwt', methods: ['GET'] },
        authn: ['bearer'],
        authz: { allow: 'authenticated', scopes: { all_of: ['bench:read'] } },
        quota: 'bench',
        handler: { proxy: { upstream: 'app' } },
      },
      {
        id: 'bench-dpop',
        match: { path_prefix: '/dpop', methods: ['GET'] },
        authn: ['dpop'],
        authz: { allow: 'authenticated', scopes: { all_of: ['bench:read'] } },
        quota: 'bench',
        handler: { proxy: { upstream: 'app' } },
      },
      {
        id: 'bench',
        match: { path_prefix: '/bench', methods: ['GET'] },
        authn: ['mtls'],
        authz: { allow: 'authenticated', subjects: ['spiffe://gatehouse.local/dev-client'] },
        quota: 'bench',
        handler: { proxy: { upstream: 'app' } },
      },
    ],
    data_dir: dataDir,
    log: { level: 'info', access: true },
    // The full pipeline: metrics are collected (they are only when an admin listener serves them).
    admin: { port: 0, subjects: ['spiffe://gatehouse.local/dev-client'] },
  };
}
