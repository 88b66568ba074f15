// The `issuer` section (the OAuth 2 authorization server: token lifetimes, signing keys, client-authentication guards) and
// the paths of its built-in endpoints.
import { z } from 'zod';
import { durationMs, positiveInt, rateSchema, resourceUri } from './fields.js';

const issuerUrl = z.url({ protocol: /^https$/ }).refine((value) => {
  const parsed = new URL(value);
  // RFC 8414 §2: https, no query or fragment; compared byte for byte with `iss`, so it is kept exactly as written. No path
  // either: the endpoints and the metadata document live at this listener's root.
  return !value.includes('?') && !value.includes('#') && parsed.username === '' && parsed.password === '' && parsed.pathname === '/';
}, 'must be an https origin (scheme, host, optional port) without path, query, fragment or credentials');

export const issuerSchema = z.strictObject({
  /** The `iss` of every token and the metadata's `issuer`, byte for byte. Default: https://localhost:<listener port>. */
  issuer: issuerUrl.optional(),
  /** The `aud` of tokens requested without `resource` by clients registered without audiences, and of bearer routes without `authz.audience`. Default: the issuer. */
  default_audience: resourceUri.optional(),
  /** Algorithm of newly generated signing keys (first start and `gatehouse keys rotate`). */
  signing_alg: z.enum(['EdDSA', 'ES256']).default('EdDSA'),
  /** Lifetime of issued access tokens. */
  access_token_ttl_s: z.int().min(30).max(3600).default(600),
  /** How long a rotated-in key is published in the JWKS before it signs (verifiers' JWKS caches see it first). */
  key_activation_delay_s: z.int().min(0).max(86_400).default(600),
  /** Leeway for exp / nbf / iat when verifying bearer tokens. */
  clock_tolerance_s: z.int().min(0).max(300).default(30),
  /** Longest bearer token accepted; checked before any decoding or crypto. */
  max_token_bytes: z.int().min(512).max(16_384).default(8192),
  /** Verified-token cache entries (each holds the claims of one token until it expires). */
  verified_token_cache: positiveInt(10_000_000).default(50_000),
  /** How often the gateway re-reads signing keys, revocations and client states written by other processes (CLI, peers). */
  refresh_interval_ms: durationMs(600_000).default(5_000),
  /** DPoP (RFC 9449): sender-constrained tokens, at the token endpoint and on `dpop` routes. */
  dpop: z
    .strictObject({
      /** How long after its `iat` a proof is accepted; its jti is remembered that long to refuse a replay. */
      proof_max_age_s: z.int().min(5).max(300).default(60),
      /** Proofs remembered at once (~150 bytes each); when every one is still live, DPoP requests fail closed (503). */
      replay_cache_entries: positiveInt(10_000_000).default(500_000),
      /** Every proof must carry a nonce this gateway (or another sharing its master key) handed out (RFC 9449 §8-9). */
      require_nonce: z.boolean().default(false),
      /** How long a nonce is accepted; then the client is sent a fresh one (use_dpop_nonce) and retries. */
      nonce_lifetime_s: z.int().min(10).max(3600).default(300),
    })
    .prefault({}),
  /** Guarding the argon2 work of client authentication (token, introspection and revocation endpoints). */
  client_auth: z
    .strictObject({
      /** Client-authentication attempts per IP, checked before any argon2 work. */
      per_ip: rateSchema.prefault({ points: 30, duration_s: 60 }),
      /** Consecutive failures for one (client id, IP) before that pair is blocked for `failure_block_s`; a success resets. */
      max_consecutive_failures: positiveInt(1000).default(10),
      failure_block_s: positiveInt(86_400).default(3600),
      /** Failures per IP per day before that IP is blocked for a day (slow brute force, spraying over many ids). */
      max_daily_failures_per_ip: positiveInt(100_000).default(100),
      /**
       * Failures for one client id per hour, from any addresses, before the id counts as under attack for an hour: then an
       * address it never authenticated from gets a single try (guessing from rotating IPs is held to one guess per address,
       * and the client itself is never locked out).
       */
      max_hourly_failures_per_client: positiveInt(100_000).default(100),
      /** argon2 verifications running at once (each holds a libuv thread and ~19 MiB); the rest wait in a bounded queue. */
      max_concurrent_hashes: positiveInt(16).default(2),
      max_queued_hashes: z.int().min(0).max(10_000).default(64),
    })
    .prefault({}),
});
export type IssuerConfig = z.infer<typeof issuerSchema>;
/** The issuer settings of a config without an `issuer` section: what the admin commands assume then. */
export const ISSUER_DEFAULTS: Readonly<IssuerConfig> = Object.freeze(issuerSchema.parse({}));

/** Paths of the issuer's built-in endpoints; no route may claim them. */
export const ISSUER_PATHS = {
  token: '/oauth2/token',
  introspect: '/oauth2/introspect',
  revoke: '/oauth2/revoke',
  metadata: '/.well-known/oauth-authorization-server',
  jwks: '/.well-known/jwks.json',
  /** Client certificate renewal (mTLS + CSR), when the listener trusts the store's client CA (tls.store_client_ca). */
  renewCertificate: '/ca/renew',
} as const;
