// The edge sections: `server` (address, accepted host names, trusted proxies), `tls` and `limits` (connections, timeouts,
// header and body bounds, HTTP/2 settings, the pre-authentication budget).
import { z } from 'zod';
import { cidr, durationMs, hostName, positiveInt, rateSchema } from './fields.js';

/** At most this many workers (`server.workers`, `serve --workers`). */
export const MAX_WORKERS = 64;

export const serverSchema = z.strictObject({
  host: z.string().min(1).default('127.0.0.1'),
  port: z.int().min(0).max(65_535).default(8443),
  /** Host names (without port) this gateway answers for; empty = any syntactically valid Host. Others get 421. */
  hosts: z.array(hostName).default([]),
  /** Peers whose X-Forwarded-For is believed (a load balancer in front). Empty = trust nobody. */
  trusted_proxies: z.array(cidr).default([]),
  /**
   * Processes serving the port (node:cluster): 1 = this process alone; N > 1 = a supervising primary and N workers; `auto` =
   * one worker per available core. Each worker writes its own audit chain; limits stay shared (redis, else the primary).
   */
  workers: z.union([z.literal('auto'), z.int().min(1).max(MAX_WORKERS)]).default(1),
});

export const tlsSchema = z.strictObject({
  cert: z.string().min(1),
  key: z.string().min(1),
  /** CA bundle that client certificates must chain to; enables (optional) client certificate requests. */
  client_ca: z.string().min(1).optional(),
  /**
   * Also trust the client CA kept in the credential store (`gatehouse ca init`; needs `issuer`), read at start and picked
   * up within a refresh once it is made. Enables client certificate requests like client_ca.
   */
  store_client_ca: z.boolean().default(false),
  /** Create a development CA, server and client certificate when the files are missing (never for production). */
  dev_certificates: z.boolean().default(false),
  /** How often session ticket keys are replaced, seconds. */
  ticket_key_rotation_s: z.int().min(60).max(86_400).default(3600),
});

const http2Schema = z.strictObject({
  max_concurrent_streams: positiveInt(1000).default(100),
  initial_window_size: positiveInt(2 ** 31 - 1).default(65_535),
  max_session_memory_mb: positiveInt(1024).default(10),
  max_header_list_pairs: z.int().min(8).max(1024).default(128),
  max_session_invalid_frames: z.int().min(0).max(100_000).default(1000),
  max_session_rejected_streams: z.int().min(0).max(100_000).default(100),
  max_outstanding_pings: positiveInt(1000).default(10),
  max_settings: positiveInt(1000).default(32),
});

export const limitsSchema = z.strictObject({
  max_connections: positiveInt(1_000_000).default(10_000),
  max_connections_per_ip: positiveInt(1_000_000).default(256),
  /** Per-IP limits key IPv6 clients on this prefix (a client usually holds a whole /64). */
  ipv6_prefix_length: z.int().min(32).max(128).default(64),
  /** New TCP connections per IP (a full TLS handshake costs as much as ~30 keep-alive requests). */
  new_connections_per_ip: rateSchema.prefault({ points: 200, duration_s: 10 }),
  handshake_timeout_ms: durationMs(120_000).default(10_000),
  headers_timeout_ms: durationMs(120_000).default(10_000),
  request_timeout_ms: durationMs(3_600_000).default(30_000),
  keep_alive_timeout_ms: durationMs(600_000).default(5_000),
  /** An HTTP/2 session with no frames for this long is closed. */
  idle_timeout_ms: durationMs(3_600_000).default(60_000),
  max_requests_per_socket: z.int().min(0).max(10_000_000).default(10_000),
  max_header_bytes: z.int().min(1024).max(65_536).default(16_384),
  max_headers: z.int().min(8).max(1000).default(100),
  max_uri_bytes: z.int().min(256).max(65_536).default(8_192),
  default_body_limit_bytes: z
    .int()
    .min(0)
    .max(2 ** 40)
    .default(1_048_576),
  /** Per-IP budget checked before any credential work (crypto, argon2). */
  pre_auth_per_ip: rateSchema.prefault({ points: 1000, duration_s: 10 }),
  http2: http2Schema.prefault({}),
});
