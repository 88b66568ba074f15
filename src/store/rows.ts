// Row validation and mapping shared by the credential-store backends: the database is outside input (another process,
// a restored backup, a hand edit), so every row read is checked before it becomes a Client, SigningKey or Revocation, and
// every backend writes the same column values.
import { z } from 'zod';
import {
  MAX_SECRETS_PER_CLIENT,
  StoreError,
  type Client,
  type ClientCa,
  type IssuedCertificate,
  type Revocation,
  type SecretHash,
  type SigningKey,
} from './contract.js';

const epochMs = z.int();
const jsonStrings = z
  .string()
  .transform((text, ctx): unknown => {
    try {
      return JSON.parse(text);
    } catch {
      ctx.issues.push({ code: 'custom', message: 'not JSON', input: text });
      return z.NEVER;
    }
  })
  .pipe(z.array(z.string()));

const clientRow = z.object({
  id: z.string(),
  name: z.string(),
  scopes: jsonStrings,
  audiences: jsonStrings,
  enabled: z.union([z.literal(0), z.literal(1)]),
  tokens_not_before_s: z.int().nonnegative().nullable(),
  access_token_ttl_s: z.int().positive().nullable(),
  require_dpop: z.union([z.literal(0), z.literal(1)]),
  tls_client_auth_subject: z.string().min(1).nullable(),
  created_at: epochMs,
  updated_at: epochMs,
});

const secretRow = z.object({
  client_id: z.string(),
  slot: z.union([z.literal(0), z.literal(1)]),
  hash: z.string().min(1),
  created_at: epochMs,
  expires_at: epochMs.nullable(),
});

const signingKeyRow = z.object({
  kid: z.string(),
  alg: z.enum(['EdDSA', 'ES256']),
  public_jwk: z.string(),
  encrypted_private_key: z.string(),
  created_at: epochMs,
  activates_at: epochMs,
  retired_at: epochMs.nullable(),
  expires_at: epochMs.nullable(),
  revoked_at: epochMs.nullable(),
});

const revocationRow = z.object({ iss: z.string(), jti: z.string(), expires_at: epochMs });

const clientCaRow = z.object({ cert_pem: z.string().min(1), encrypted_private_key: z.string().min(1), created_at: epochMs });

const certificateRow = z.object({
  serial: z.string().regex(/^[0-9a-f]{1,64}$/),
  client_id: z.string().min(1),
  subject: z.string().min(1),
  thumbprint: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
  not_before: epochMs,
  not_after: epochMs,
  issued_at: epochMs,
  revoked_at: epochMs.nullable(),
});

type SecretRow = z.infer<typeof secretRow>;

/** Parses one row or throws StoreError('invalid') naming the table and the row's key (never its contents). */
function parseRow<S extends z.ZodType>(schema: S, row: unknown, table: string, key: string): z.infer<S> {
  const result = schema.safeParse(row);
  if (result.success) return result.data;
  const fields = [...new Set(result.error.issues.map((issue) => issue.path.map(String).join('.') || '(row)'))].join(', ');
  throw new StoreError('invalid', `corrupt row in ${table} (${key}): bad ${fields}`);
}

/** The row's own key for error messages, when a corrupt row cannot be trusted to have a readable one. */
function rawKey(row: unknown, ...columns: string[]): string {
  const record = typeof row === 'object' && row !== null ? (row as Record<string, unknown>) : {};
  return columns.map((c) => `${c}=${JSON.stringify(record[c]) ?? '?'}`).join(', ');
}

function toSecret(row: SecretRow): SecretHash {
  return { hash: row.hash, createdAt: row.created_at, expiresAt: row.expires_at };
}

export type ClientParams = {
  id: string;
  name: string;
  scopes: string;
  audiences: string;
  enabled: 0 | 1;
  tokens_not_before_s: number | null;
  access_token_ttl_s: number | null;
  require_dpop: 0 | 1;
  tls_client_auth_subject: string | null;
  created_at: number;
  updated_at: number;
};
export type SecretParams = { client_id: string; slot: number; hash: string; created_at: number; expires_at: number | null };
export type KeyParams = {
  kid: string;
  alg: string;
  public_jwk: string;
  encrypted_private_key: string;
  created_at: number;
  activates_at: number;
  retired_at: number | null;
  expires_at: number | null;
  revoked_at: number | null;
};

function toSigningKey(row: z.infer<typeof signingKeyRow>): SigningKey {
  return {
    kid: row.kid,
    alg: row.alg,
    publicJwk: row.public_jwk,
    encryptedPrivateKey: row.encrypted_private_key,
    createdAt: row.created_at,
    activatesAt: row.activates_at,
    retiredAt: row.retired_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
  };
}

export function checkSecrets(client: Client): void {
  if (client.secrets.length > MAX_SECRETS_PER_CLIENT) {
    throw new StoreError('invalid', `client ${client.id}: at most ${MAX_SECRETS_PER_CLIENT} secrets (got ${client.secrets.length})`);
  }
}

export function clientParams(client: Client): ClientParams {
  return {
    id: client.id,
    name: client.name,
    scopes: JSON.stringify(client.scopes),
    audiences: JSON.stringify(client.audiences),
    enabled: client.enabled ? 1 : 0,
    tokens_not_before_s: client.tokensNotBeforeS,
    access_token_ttl_s: client.accessTokenTtlS,
    require_dpop: client.requireDpop ? 1 : 0,
    tls_client_auth_subject: client.tlsClientAuthSubject,
    created_at: client.createdAt,
    updated_at: client.updatedAt,
  };
}

export function keyParams(key: SigningKey): KeyParams {
  return {
    kid: key.kid,
    alg: key.alg,
    public_jwk: key.publicJwk,
    encrypted_private_key: key.encryptedPrivateKey,
    created_at: key.createdAt,
    activates_at: key.activatesAt,
    retired_at: key.retiredAt,
    expires_at: key.expiresAt,
    revoked_at: key.revokedAt,
  };
}

function toClient(row: z.infer<typeof clientRow>, secrets: readonly SecretHash[]): Client {
  return {
    id: row.id,
    name: row.name,
    secrets,
    scopes: row.scopes,
    audiences: row.audiences,
    enabled: row.enabled === 1,
    tokensNotBeforeS: row.tokens_not_before_s,
    accessTokenTtlS: row.access_token_ttl_s,
    requireDpop: row.require_dpop === 1,
    tlsClientAuthSubject: row.tls_client_auth_subject,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** One client from its row and its secret rows (in slot order). */
export function clientFromRows(client: unknown, secrets: readonly unknown[]): Client {
  const row = parseRow(clientRow, client, 'clients', rawKey(client, 'id'));
  return toClient(
    row,
    secrets.map((raw) => toSecret(parseRow(secretRow, raw, 'client_secrets', rawKey(raw, 'client_id', 'slot')))),
  );
}

/** Every client from the rows of both tables: each secret (in slot order) under its client. */
export function clientsFromRows(clients: readonly unknown[], secrets: readonly unknown[]): Client[] {
  const byClient = new Map<string, SecretHash[]>();
  for (const raw of secrets) {
    const row = parseRow(secretRow, raw, 'client_secrets', rawKey(raw, 'client_id', 'slot'));
    const list = byClient.get(row.client_id) ?? [];
    list.push(toSecret(row));
    byClient.set(row.client_id, list);
  }
  return clients.map((raw) => {
    const row = parseRow(clientRow, raw, 'clients', rawKey(raw, 'id'));
    return toClient(row, byClient.get(row.id) ?? []);
  });
}

export function signingKeyFromRow(raw: unknown): SigningKey {
  return toSigningKey(parseRow(signingKeyRow, raw, 'signing_keys', rawKey(raw, 'kid')));
}

export function revocationFromRow(raw: unknown): Revocation {
  const row = parseRow(revocationRow, raw, 'revocations', rawKey(raw, 'iss', 'jti'));
  return { iss: row.iss, jti: row.jti, expiresAt: row.expires_at };
}

// What a write that changed no row means: the backends ask whether the kid exists, and say the same thing either way.

/** A schedule update matched no row: no such kid (`not_found`), or the kid names other key material (`invalid`). */
export function keyUpdateMissed(kid: string, exists: boolean): StoreError {
  return new StoreError(exists ? 'invalid' : 'not_found', `signing key ${kid}: not found with that key material`);
}

/** A retirement matched no row: no such kid (`not_found`), or another rotation retired the key first (`conflict`). */
export function retirementMissed(kid: string, exists: boolean): StoreError {
  return exists ? new StoreError('conflict', `signing key ${kid} was already retired`) : new StoreError('not_found', `signing key ${kid} not found`);
}

export function clientCaFromRow(raw: unknown): ClientCa {
  const row = parseRow(clientCaRow, raw, 'client_ca', 'the client CA');
  return { certPem: row.cert_pem, encryptedPrivateKey: row.encrypted_private_key, createdAt: row.created_at };
}

export interface ClientCaParams {
  readonly cert_pem: string;
  readonly encrypted_private_key: string;
  readonly created_at: number;
}

export function clientCaParams(ca: ClientCa): ClientCaParams {
  return { cert_pem: ca.certPem, encrypted_private_key: ca.encryptedPrivateKey, created_at: ca.createdAt };
}

export function certificateFromRow(raw: unknown): IssuedCertificate {
  const row = parseRow(certificateRow, raw, 'client_certificates', rawKey(raw, 'serial'));
  return {
    serial: row.serial,
    clientId: row.client_id,
    subject: row.subject,
    thumbprint: row.thumbprint,
    notBefore: row.not_before,
    notAfter: row.not_after,
    issuedAt: row.issued_at,
    revokedAt: row.revoked_at,
  };
}

export interface CertificateParams {
  readonly serial: string;
  readonly client_id: string;
  readonly subject: string;
  readonly thumbprint: string;
  readonly not_before: number;
  readonly not_after: number;
  readonly issued_at: number;
  readonly revoked_at: number | null;
}

export function certificateParams(certificate: IssuedCertificate): CertificateParams {
  return {
    serial: certificate.serial,
    client_id: certificate.clientId,
    subject: certificate.subject,
    thumbprint: certificate.thumbprint,
    not_before: certificate.notBefore,
    not_after: certificate.notAfter,
    issued_at: certificate.issuedAt,
    revoked_at: certificate.revokedAt,
  };
}
