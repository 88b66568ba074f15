// Lifecycle operations on the issuer's OAuth clients — add, update, disable, enable, rotate a secret, remove: one function
// per operation, called by the CLI (and later the admin API), which only parse and print. Each returns what changed, for
// the admin record; a clear secret exists only in the return value of `addClient` and `rotateClientSecret`.
import { setTimeout as sleep } from 'node:timers/promises';
import { isoTime } from '../lib/iso-time.js';
import { MAX_SECRETS_PER_CLIENT, StoreError, type Client, type ClientStore, type SecretHash } from '../store/contract.js';
import { generateClientId, generateClientSecret, hashSecret, isActiveSecret } from './secrets.js';

/** Everything about a client an operator may see, as the CLI's --json and the admin API show it: never a hash. */
export function clientView(client: Client, now: number) {
  return {
    client_id: client.id,
    name: client.name,
    enabled: client.enabled,
    scopes: client.scopes,
    audiences: client.audiences,
    access_token_ttl_s: client.accessTokenTtlS,
    require_dpop: client.requireDpop,
    tls_client_auth_subject: client.tlsClientAuthSubject,
    tokens_not_before: client.tokensNotBeforeS === null ? null : isoTime(client.tokensNotBeforeS * 1000),
    active_secrets: client.secrets.filter((secret) => isActiveSecret(secret, now)).length,
    created_at: isoTime(client.createdAt),
    updated_at: isoTime(client.updatedAt),
  };
}

/** One client with its secrets' creation and expiry times (`clients show`, GET /v1/clients/{id}). */
export function clientDetailView(client: Client, now: number) {
  return {
    ...clientView(client, now),
    secrets: client.secrets.map((secret) => ({
      created_at: isoTime(secret.createdAt),
      expires_at: isoTime(secret.expiresAt),
      active: isActiveSecret(secret, now),
    })),
  };
}

/** What the admin record of an added client says it was made with (never its secret). */
export function addedFields(client: Client): Readonly<Record<string, unknown>> {
  return {
    name: client.name,
    scopes: client.scopes,
    audiences: client.audiences,
    access_token_ttl_s: client.accessTokenTtlS,
    require_dpop: client.requireDpop,
    tls_client_auth_subject: client.tlsClientAuthSubject,
  };
}

/** The fields an operator may set on a client; `accessTokenTtlS: null` means the issuer's lifetime. */
export interface ClientSettings {
  readonly name: string;
  readonly scopes: readonly string[];
  readonly audiences: readonly string[];
  readonly accessTokenTtlS: number | null;
  /** Only DPoP-bound tokens for this client (RFC 9449 §5). */
  readonly requireDpop: boolean;
  /** RFC 8705 tls_client_auth: the SAN identity of its client certificate; the client then has no secret. null = a secret. */
  readonly tlsClientAuthSubject: string | null;
}

/** One changed field, as the admin record shows it: never a secret or a hash. */
export type FieldChanges = Readonly<Record<string, { readonly from: unknown; readonly to: unknown }>>;

export interface ClientChangeResult {
  readonly client: Client;
  /** Empty when the operation found the client already as asked (idempotent disable / enable). */
  readonly changes: FieldChanges;
}

/** A client with a secret (returned once, here), or — with `tlsClientAuthSubject` — one that has only its certificate. */
export async function addClient(
  store: ClientStore,
  settings: ClientSettings,
  now: number,
): Promise<{ readonly client: Client; readonly secret: string | undefined }> {
  const secret = settings.tlsClientAuthSubject === null ? generateClientSecret() : undefined;
  const client: Client = {
    id: generateClientId(),
    name: settings.name,
    secrets: secret === undefined ? [] : [{ hash: await hashSecret(secret), createdAt: now, expiresAt: null }],
    scopes: settings.scopes,
    audiences: settings.audiences,
    enabled: true,
    tokensNotBeforeS: null,
    accessTokenTtlS: settings.accessTokenTtlS,
    requireDpop: settings.requireDpop,
    tlsClientAuthSubject: settings.tlsClientAuthSubject,
    createdAt: now,
    updatedAt: now,
  };
  await store.createClient(client);
  return { client, secret };
}

/**
 * Changes the given settings of a client in one transaction. Tokens already issued keep the scopes, audiences and lifetime
 * they were issued with until they expire; `disableClient` then `enableClient` ends them at once.
 */
export async function updateClient(store: ClientStore, id: string, settings: Partial<ClientSettings>): Promise<ClientChangeResult> {
  let changes: FieldChanges = {};
  const client = await store.updateClient(id, (current) => {
    const next: Client = {
      ...current,
      ...(settings.name !== undefined ? { name: settings.name } : {}),
      ...(settings.scopes !== undefined ? { scopes: settings.scopes } : {}),
      ...(settings.audiences !== undefined ? { audiences: settings.audiences } : {}),
      ...(settings.accessTokenTtlS !== undefined ? { accessTokenTtlS: settings.accessTokenTtlS } : {}),
      ...(settings.requireDpop !== undefined ? { requireDpop: settings.requireDpop } : {}),
      ...(settings.tlsClientAuthSubject !== undefined ? { tlsClientAuthSubject: settings.tlsClientAuthSubject } : {}),
    };
    changes = diff(current, next, ['name', 'scopes', 'audiences', 'accessTokenTtlS', 'requireDpop', 'tlsClientAuthSubject']);
    return next;
  });
  return { client, changes };
}

/**
 * Stops the client from authenticating, and ends every token it holds: the tokens' cut-off moves to the second after now,
 * so no token issued before the disable is accepted again, even after an enable. Idempotent.
 */
export async function disableClient(store: ClientStore, id: string, now: number): Promise<ClientChangeResult> {
  let changes: FieldChanges = {};
  const client = await store.updateClient(id, (current) => {
    if (!current.enabled) return current;
    const next: Client = { ...current, enabled: false, tokensNotBeforeS: Math.max(current.tokensNotBeforeS ?? 0, Math.floor(now / 1000) + 1) };
    changes = diff(current, next, ['enabled', 'tokensNotBeforeS']);
    return next;
  });
  return { client, changes };
}

/** The longest an enable waits for its cut-off second to begin. */
const MAX_ENABLE_WAIT_MS = 1000;

/**
 * Lets a disabled client authenticate again. No token issued before the enable is ever accepted: the cut-off moves to the
 * second after now — past any token a request still in flight at the disable (waiting for argon2 with the old client
 * row) may have been given. Token `iat`s have a resolution of one second, so the enable then waits (at most a second)
 * for that second to begin: a token issued after the enable is never refused. A cut-off further ahead (set on a machine
 * whose clock runs ahead) is not waited for; the token endpoint answers 503 + Retry-After until it passes.
 */
export async function enableClient(store: ClientStore, id: string, clock: () => number = Date.now): Promise<ClientChangeResult> {
  const current = await store.getClient(id);
  if (current === undefined) throw new StoreError('not_found', `client ${id} not found`);
  if (current.enabled) return { client: current, changes: {} };
  const start = clock();
  const cutOffS = Math.floor(start / 1000) + 1;
  // A loop, not one sleep: a timer may fire a millisecond before the wall clock says the second has begun.
  for (let left = cutOffS * 1000 - clock(); left > 0 && clock() - start < MAX_ENABLE_WAIT_MS; left = cutOffS * 1000 - clock()) await sleep(left);
  let changes: FieldChanges = {};
  const client = await store.updateClient(id, (latest) => {
    if (latest.enabled) return latest;
    const next: Client = { ...latest, enabled: true, tokensNotBeforeS: Math.max(latest.tokensNotBeforeS ?? 0, cutOffS) };
    changes = diff(latest, next, ['enabled', 'tokensNotBeforeS']);
    return next;
  });
  return { client, changes };
}

/**
 * The secrets after a rotation: the new one, plus (with keepOldMs) the newest old secret still valid, ending at
 * now + keepOldMs at the latest (a rotation never lengthens an old secret's life). Expired secrets are dropped.
 */
export function rotatedSecrets(current: readonly SecretHash[], next: SecretHash, now: number, keepOldMs: number | undefined): SecretHash[] {
  if (keepOldMs === undefined) return [next];
  const newestOld = current.filter((secret) => isActiveSecret(secret, now)).sort((a, b) => b.createdAt - a.createdAt)[0];
  if (newestOld === undefined) return [next];
  const until = now + keepOldMs;
  const kept: SecretHash = { ...newestOld, expiresAt: newestOld.expiresAt === null ? until : Math.min(newestOld.expiresAt, until) };
  return [next, kept].slice(0, MAX_SECRETS_PER_CLIENT);
}

/** A new secret; the newest old one keeps working for keepOldMs (or stops now). */
export async function rotateClientSecret(
  store: ClientStore,
  id: string,
  keepOldMs: number | undefined,
  now: number,
): Promise<{ readonly client: Client; readonly secret: string; readonly oldSecretExpiresAt: number | null }> {
  const secret = generateClientSecret();
  const next: SecretHash = { hash: await hashSecret(secret), createdAt: now, expiresAt: null };
  const client = await store.updateClient(id, (current) => ({ ...current, secrets: rotatedSecrets(current.secrets, next, now, keepOldMs) }));
  const oldSecretExpiresAt = client.secrets.find((s) => s.hash !== next.hash)?.expiresAt ?? null;
  return { client, secret, oldSecretExpiresAt };
}

/** Deletes the client and its secrets; its tokens stop working at the gateways' next refresh. Throws StoreError('not_found'). */
export async function removeClient(store: ClientStore, id: string): Promise<void> {
  if (!(await store.removeClient(id))) throw new StoreError('not_found', `client ${id} not found`);
}

function diff<K extends keyof Client>(before: Client, after: Client, fields: readonly K[]): FieldChanges {
  const changes: Record<string, { from: unknown; to: unknown }> = {};
  for (const field of fields) {
    if (JSON.stringify(before[field]) !== JSON.stringify(after[field])) changes[snake(field)] = { from: before[field], to: after[field] };
  }
  return changes;
}

function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
