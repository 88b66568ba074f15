// Client authentication for the OAuth endpoints (RFC 6749 §2.3): client_secret_basic, client_secret_post or (RFC 8705)
// tls_client_auth, exactly one per request. Secrets are checked against argon2id hashes, after the cheap limits, so
// guessing and floods never reach argon2 unchecked:
//   1. per-IP attempts (every attempt, before any argon2 work)
//   2. blocked (client id, IP) pair, blocked IP, or an address that already failed for a client id under attack from
//      many IPs (rate-limiter-flexible's login protection: get() before verifying)
//   3. argon2 verify, bounded concurrency; unknown, disabled and secret-less clients cost one dummy verify
//   4. failure → one point on (client id, IP), on the IP's day and on the client id's hour; success → the pair's count is
//      reset and the pair remembered as familiar
// Unknown client, wrong secret, disabled client and a blocked pair's wrong guesses all end in the same 401 (OA-05).
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { RateLimiterRes } from 'rate-limiter-flexible';
import type { IssuerConfig } from '../config/issuer.js';
import { GatewayError } from '../errors/catalogue.js';
import type { DeepReadonly } from '../lib/deep-freeze.js';
import { MemoryLimiterBackend, type Counter, type LimiterBackend } from '../quota/backend.js';
import type { Authenticator, AuthnResult, Principal, RequestContext } from '../pipeline/stage.js';
import { StoreError, type Client, type ClientStore } from '../store/contract.js';
import type { MtlsAuthenticator } from '../authn/mtls.js';
import { parseBasicCredentials, single, type FormParams } from './form.js';
import { CLIENT_ID_PATTERN, HashQueueFullError, isActiveSecret, MAX_SECRET_LENGTH, SecretVerifier } from './secrets.js';

export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'tls_client_auth';

export type ClientAuthResult =
  | { readonly ok: true; readonly client: Client; readonly method: ClientAuthMethod }
  | {
      readonly ok: false;
      readonly error: GatewayError /** The presented client id when it was well-formed (audit only). */;
      readonly clientId: string | undefined;
    };

/** What one attempt presents: the Authorization header, the parsed form and the client's per-IP limit key. */
export interface ClientAuthAttempt {
  readonly authorization: string | undefined;
  readonly params: FormParams;
  readonly limitKey: string;
  /** The identity (SAN) of the connection's client certificate, when the handshake verified one (tls_client_auth). */
  readonly certificate?: string | undefined;
}

/**
 * Told about every client that authenticates, with when the store read that found it began, so the bearer path knows it
 * is active before the next store refresh.
 */
export type ClientSeen = (client: Client, readAt: number) => void;

/** A client authenticated at an OAuth endpoint: the principal of its request, carrying the client the store returned. */
export interface ClientPrincipal extends Principal {
  readonly method: ClientAuthMethod;
  readonly client: Client;
}

/** The client of a request on an OAuth endpoint. A route without OAuthClientAuthenticator is misconfigured: a fault. */
export function clientOf(principal: Principal): Client {
  if (!('client' in principal)) throw new Error('OAuth endpoint reached without client authentication');
  return (principal as ClientPrincipal).client;
}

/** A client authenticating to the issuer holds no access-token scopes; the token endpoint grants them. */
const NO_SCOPES: ReadonlySet<string> = new Set();
const NO_FORM: ReadonlyMap<string, readonly string[]> = new Map();

/**
 * OAuth client authentication as a pipeline stage, on the issuer's POST endpoints, after their form intake. Never
 * "not applicable": a request without client credentials is refused (invalid_client), whatever else it carries.
 */
export class OAuthClientAuthenticator implements Authenticator {
  readonly id = 'oauth-client';

  constructor(
    private readonly clients: ClientAuthenticator,
    /** The `mtls` routes' own authenticator (a verified chain, clientAuth usage, one usable SAN identity, not revoked). */
    private readonly certificates: MtlsAuthenticator,
  ) {}

  async authenticate(request: RequestContext): Promise<AuthnResult> {
    const certificate = this.certificates.authenticate(request);
    const verified = certificate.outcome === 'authenticated' ? certificate.principal : undefined;
    const auth = await this.clients.authenticate({
      authorization: request.authorization,
      params: request.form ?? NO_FORM,
      limitKey: request.connection.limitKey,
      certificate: verified?.subject,
    });
    if (!auth.ok) {
      // The id presented, verified or not, is on record as who was being tried; nothing verified, so no method.
      return { outcome: 'rejected', error: auth.error, ...(auth.clientId !== undefined ? { presented: { subject: auth.clientId } } : {}) };
    }
    const { client, method } = auth;
    // The certificate this connection proved, whatever the method: the token endpoint binds tokens to it (RFC 8705 §3).
    const principal: ClientPrincipal = {
      subject: client.id,
      method,
      scopes: NO_SCOPES,
      clientId: client.id,
      client,
      ...(verified?.certificateThumbprint !== undefined ? { certificateThumbprint: verified.certificateThumbprint } : {}),
    };
    return { outcome: 'authenticated', principal };
  }
}

const HOUR_S = 3600;
const DAY_S = 86_400;
/** (client id, IP) pairs that authenticated recently: bounded, and forgotten after 30 days without a success. */
const FAMILIAR_PAIRS = 100_000;
const FAMILIAR_TTL_MS = 30 * DAY_S * 1000;
const BASIC_CHALLENGE = Object.freeze({ 'www-authenticate': 'Basic realm="gatehouse", charset="UTF-8"' });

export class ClientAuthenticator {
  private readonly perIp: Counter;
  private readonly consecutiveFails: Counter;
  private readonly dailyFailsByIp: Counter;
  private readonly hourlyFailsByClient: Counter;
  private readonly familiar = new LRUCache<string, true>({ max: FAMILIAR_PAIRS, ttl: FAMILIAR_TTL_MS });
  /** Attempts between the limit check and their outcome, per (client id, IP) pair; entries vanish at zero (bounded by the hash queue). */
  private readonly pending = new Map<string, number>();
  private readonly verifier: SecretVerifier;

  constructor(
    private readonly store: ClientStore,
    private readonly settings: DeepReadonly<IssuerConfig['client_auth']>,
    private readonly log: Logger,
    private readonly seen: ClientSeen,
    private readonly now: () => number = Date.now,
    /** Where the counters live: this process's memory, or Redis shared by every instance (never off while it is away). */
    limiters: LimiterBackend = new MemoryLimiterBackend(),
  ) {
    const { per_ip: perIp } = settings;
    this.perIp = limiters.counter({ keyPrefix: 'client-auth-ip', points: perIp.points, durationS: perIp.duration_s, blockS: perIp.block_s });
    // A day's window: a pair that stops failing is forgotten after a day even without a success (bounded state).
    this.consecutiveFails = limiters.counter({
      keyPrefix: 'client-auth-fails',
      points: settings.max_consecutive_failures,
      durationS: DAY_S,
      blockS: settings.failure_block_s,
    });
    this.dailyFailsByIp = limiters.counter({ keyPrefix: 'client-auth-daily', points: settings.max_daily_failures_per_ip, durationS: DAY_S, blockS: DAY_S });
    this.hourlyFailsByClient = limiters.counter({
      keyPrefix: 'client-auth-client',
      points: settings.max_hourly_failures_per_client,
      durationS: HOUR_S,
      blockS: HOUR_S,
    });
    this.verifier = new SecretVerifier({ maxConcurrent: settings.max_concurrent_hashes, maxQueued: settings.max_queued_hashes });
  }

  /** argon2 verifications running and waiting. */
  get hashLoad(): { readonly running: number; readonly queued: number } {
    return this.verifier.load;
  }

  async authenticate(attempt: ClientAuthAttempt): Promise<ClientAuthResult> {
    const presented = presentedCredentials(attempt);
    if (!presented.ok) return presented;
    const { clientId, secret, method } = presented;
    const wellFormedId = CLIENT_ID_PATTERN.test(clientId) ? clientId : undefined;

    // 1. Every attempt spends the IP's budget before anything costs more than a Map lookup.
    try {
      await this.perIp.consume(attempt.limitKey);
    } catch (outcome) {
      return { ok: false, error: limited(outcome, 'client authentication attempts per IP'), clientId: wellFormedId };
    }

    // 2. Blocked callers never reach argon2 (SEC-06): the pair key is the presented id with the IP (SEC-08: an attacker who
    // locks a client out from his address does not lock out the client's own address).
    const pairKey = `${wellFormedId ?? '-'}\n${attempt.limitKey}`;
    const clientKey = wellFormedId ?? '-';
    const [pair, daily, perClient] = await Promise.all([
      this.consecutiveFails.get(pairKey),
      this.dailyFailsByIp.get(attempt.limitKey),
      this.hourlyFailsByClient.get(clientKey),
    ]);
    // OA-11: while a client id is being guessed at from rotating IPs, an address it never authenticated from gets one try
    // and is refused after its first failure. The attack is held to one guess per address, and it can neither lock the
    // client out of the addresses it uses (remembered after a success) nor out of a new one (whose first try is its own;
    // SEC-08) — even after a restart has emptied that memory. That one try counts from the moment it is under way, so
    // concurrent guesses from a fresh address cannot all pass a check that only sees failures already recorded (the check
    // and the hold below run without an await between them). The other limits tolerate the small overshoot of concurrent
    // attempts (bounded by per_ip and the hash queue) rather than refuse a legitimate burst of token requests.
    const clientBlocked = this.familiar.has(pairKey) ? 0 : blockedMs(perClient, this.settings.max_hourly_failures_per_client);
    const failedHere = (pair?.consumedPoints ?? 0) > 0;
    const blockedFor = Math.max(
      blockedMs(daily, this.settings.max_daily_failures_per_ip),
      blockedMs(pair, this.settings.max_consecutive_failures),
      // Refused for the attack's duration after a failure here; while the one try is still running, only for a second.
      clientBlocked > 0 && failedHere ? clientBlocked : 0,
      clientBlocked > 0 && !failedHere && this.inProgress(pairKey) > 0 ? 1000 : 0,
    );
    if (blockedFor > 0) {
      return { ok: false, error: rateLimited(blockedFor, 'client authentication blocked after failures'), clientId: wellFormedId };
    }

    this.pending.set(pairKey, this.inProgress(pairKey) + 1);
    try {
      return await this.verify(attempt, wellFormedId, secret, method, pairKey, clientKey, pair);
    } finally {
      // Released only once the attempt's failure (if any) is counted: the limiter takes over from the hold.
      const left = this.inProgress(pairKey) - 1;
      if (left > 0) this.pending.set(pairKey, left);
      else this.pending.delete(pairKey);
    }
  }

  private inProgress(key: string): number {
    return this.pending.get(key) ?? 0;
  }

  /** Steps 3 and 4: the store lookup and argon2 (or the dummy), then failure counting or the success bookkeeping. */
  private async verify(
    attempt: ClientAuthAttempt,
    wellFormedId: string | undefined,
    secret: string,
    method: ClientAuthMethod,
    pairKey: string,
    clientKey: string,
    pair: RateLimiterRes | null,
  ): Promise<ClientAuthResult> {
    // 3. The store lookup and argon2 run for every well-formed attempt; a malformed id gets the dummy verify.
    const readAt = this.now();
    let client: Client | undefined;
    try {
      client = wellFormedId === undefined ? undefined : await this.store.getClient(wellFormedId);
    } catch (fault) {
      // The store cannot answer (REL-06): fail closed, as temporarily unavailable, never as a wrong secret. Nothing is
      // counted against the client: it did nothing wrong.
      if (!(fault instanceof StoreError && fault.code === 'unavailable')) throw fault;
      this.log.warn({ client_id: wellFormedId ?? null, err: fault.message }, 'client authentication: credential store unavailable');
      return {
        ok: false,
        error: new GatewayError('service_unavailable', { reason: 'credential store unavailable', headers: { 'retry-after': '2' } }),
        clientId: wellFormedId,
      };
    }
    let check: Awaited<ReturnType<typeof this.verifier.verify>>;
    try {
      if (method === 'tls_client_auth') {
        // RFC 8705 §2.1: the certificate the handshake verified carries the identity the client is registered with.
        const subject = client?.enabled === true ? client.tlsClientAuthSubject : null;
        check = subject !== null && subject === attempt.certificate ? { ok: true, rehash: undefined } : { ok: false };
      } else {
        // A client registered for tls_client_auth has no secret to check: it gets the dummy verify like an unknown one.
        const secrets = client?.enabled === true && client.tlsClientAuthSubject === null ? client.secrets : undefined;
        check = await this.verifier.verify(secrets, secret, this.now());
      }
    } catch (fault) {
      if (!(fault instanceof HashQueueFullError)) throw fault;
      return {
        ok: false,
        error: new GatewayError('service_unavailable', { reason: 'argon2 queue full', headers: { 'retry-after': '1' } }),
        clientId: wellFormedId,
      };
    }

    if (!check.ok || client === undefined) {
      // 4. Failures count against the pair, the IP's day and the id's hour; the answer is the same 401 whichever limit trips.
      const [pairBlocked, ipBlocked, idUnderAttack] = await Promise.all([
        countFailure(this.consecutiveFails, pairKey, this.settings.max_consecutive_failures, this.settings.failure_block_s),
        countFailure(this.dailyFailsByIp, attempt.limitKey, this.settings.max_daily_failures_per_ip, DAY_S),
        countFailure(this.hourlyFailsByClient, clientKey, this.settings.max_hourly_failures_per_client, HOUR_S),
      ]);
      if (pairBlocked || ipBlocked || idUnderAttack) {
        const blocked = [
          pairBlocked ? 'client-and-ip' : undefined,
          ipBlocked ? 'ip' : undefined,
          idUnderAttack ? 'client-from-unfamiliar-ips' : undefined,
        ].filter(Boolean);
        this.log.warn({ client_id: wellFormedId ?? null, limit_key: attempt.limitKey, blocked }, 'client authentication blocked after repeated failures');
      }
      // The answer is the same for every cause (OA-05); only the audit record says which it was.
      return { ok: false, error: invalidClient(failureReason(wellFormedId, client, method, this.now())), clientId: wellFormedId };
    }

    if (pair !== null && pair.consumedPoints > 0) await this.consecutiveFails.delete(pairKey);
    this.familiar.set(pairKey, true);
    this.seen(client, readAt);
    if (check.rehash !== undefined) this.upgradeHash(client.id, check.rehash);
    return { ok: true, client, method };
  }

  /** SEC-02: a hash made with weaker parameters is replaced after a successful verification. Best effort: a failure only logs. */
  private upgradeHash(clientId: string, rehash: { readonly old: string; readonly hash: string }): void {
    this.store
      .updateClient(clientId, (current) => ({
        ...current,
        secrets: current.secrets.map((entry) => (entry.hash === rehash.old ? { ...entry, hash: rehash.hash } : entry)),
        updatedAt: this.now(),
      }))
      .then(() => this.log.info({ client_id: clientId }, 'client secret re-hashed with current argon2 parameters'))
      .catch((fault: unknown) =>
        this.log.warn({ client_id: clientId, err: fault instanceof Error ? fault.message : String(fault) }, 'client secret re-hash failed'),
      );
  }
}

/** Why a client authentication failed, for the audit record only (never sent: every cause gets the same 401). */
function failureReason(wellFormedId: string | undefined, client: Client | undefined, method: ClientAuthMethod, now: number): string {
  if (wellFormedId === undefined) return 'malformed client id';
  if (client === undefined) return 'unknown client';
  if (!client.enabled) return 'client disabled';
  if (method === 'tls_client_auth')
    return client.tlsClientAuthSubject === null ? 'client does not use tls_client_auth' : 'client certificate of another identity';
  if (client.tlsClientAuthSubject !== null) return 'client authenticates with its certificate only';
  if (!client.secrets.some((secret) => isActiveSecret(secret, now))) return 'no unexpired secret';
  return 'wrong secret';
}

type Presented =
  | { readonly ok: true; readonly clientId: string; readonly secret: string; readonly method: ClientAuthMethod }
  | { readonly ok: false; readonly error: GatewayError; readonly clientId: undefined };

/** Exactly one client authentication method per request (RFC 6749 §2.3, OA-03). */
function presentedCredentials(attempt: ClientAuthAttempt): Presented {
  const bodyId = single(attempt.params, 'client_id');
  const bodySecret = single(attempt.params, 'client_secret');
  if (typeof bodyId === 'object' || typeof bodySecret === 'object') return refuse('invalid_request', 'client credentials repeated');

  if (attempt.authorization !== undefined) {
    const basic = parseBasicCredentials(attempt.authorization);
    // Another scheme (a bearer token, say) is no client authentication at all.
    if (basic === undefined) return refuse('invalid_client', 'unsupported client authentication scheme');
    if (!basic.ok) return refuse('invalid_request', basic.reason);
    if (bodySecret !== undefined) return refuse('invalid_request', 'more than one client authentication method');
    // A client_id in the body beside Basic is allowed only when it names the same client.
    if (bodyId !== undefined && bodyId !== basic.value.clientId) return refuse('invalid_request', 'client_id differs from the Basic credentials');
    return credentials(basic.value.clientId, basic.value.clientSecret, 'client_secret_basic');
  }
  // RFC 8705 §2: tls_client_auth names the client in the body and proves it with the connection's certificate.
  if (bodyId !== undefined && bodySecret === undefined && attempt.certificate !== undefined) return credentials(bodyId, '', 'tls_client_auth');
  if (bodyId === undefined || bodySecret === undefined) return refuse('invalid_client', 'no client authentication');
  return credentials(bodyId, bodySecret, 'client_secret_post');
}

function credentials(clientId: string, secret: string, method: ClientAuthMethod): Presented {
  // Longer than anything issued: refused without a store lookup or argon2 (but after the same checks as everything else).
  if (clientId.length > 256 || secret.length > MAX_SECRET_LENGTH) return refuse('invalid_client', 'client credentials too long');
  return { ok: true, clientId, secret, method };
}

function refuse(code: 'invalid_request' | 'invalid_client', reason: string): Presented {
  return { ok: false, error: code === 'invalid_client' ? invalidClient(reason) : new GatewayError(code, { reason }), clientId: undefined };
}

/**
 * Every 401 carries a challenge (RFC 9110 §11.6.1); Basic is the scheme a client can answer it with (RFC 6749 §5.2). The
 * same for every cause and method, so nothing about the response tells the causes apart (OA-05).
 */
function invalidClient(reason: string): GatewayError {
  return new GatewayError('invalid_client', { reason, headers: BASIC_CHALLENGE });
}

/**
 * One failure on `key`; the failure that uses up the last point blocks the key for `blockS`, so the next attempt is refused
 * before argon2. True when this failure started a block.
 */
async function countFailure(limiter: Counter, key: string, points: number, blockS: number): Promise<boolean> {
  let consumed: number;
  try {
    consumed = (await limiter.consume(key)).consumedPoints;
  } catch (outcome) {
    // Concurrent failures raced past the check above: the key is over its points, so it is blocked already.
    if (outcome instanceof RateLimiterRes) return false;
    throw outcome;
  }
  if (consumed < points) return false;
  await limiter.block(key, blockS);
  return true;
}

/** Milliseconds a limiter entry still blocks, or 0. `consumedPoints > points` is how rate-limiter-flexible marks a block. */
function blockedMs(entry: RateLimiterRes | null, points: number): number {
  return entry !== null && entry.consumedPoints > points ? Math.max(1, entry.msBeforeNext) : 0;
}

function rateLimited(ms: number, reason: string): GatewayError {
  return new GatewayError('rate_limited', { reason, headers: { 'retry-after': String(Math.max(1, Math.ceil(ms / 1000))) } });
}

function limited(outcome: unknown, reason: string): GatewayError {
  if (outcome instanceof RateLimiterRes) return rateLimited(outcome.msBeforeNext, reason);
  throw outcome;
}
