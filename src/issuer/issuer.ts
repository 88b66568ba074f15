// The authorization server as one unit: opens the store and the key-encryption key, makes sure a signing key exists,
// loads the KeyRing and the revocation state, and builds the bearer authenticator and the endpoint handlers over them.
// A refresh loop re-reads keys, revocations and client states, so `gatehouse keys rotate` and `clients disable` (other
// processes) take effect without a restart. A store that reports its changes (PostgreSQL LISTEN/NOTIFY) triggers the
// refresh at once, and hands over revocations as they are made; the loop stays as the safety net for lost notifications.
import type { Logger } from 'pino';
import { BearerAuthenticator, type VerificationKeys } from '../authn/bearer.js';
import { DpopAuthenticator } from '../authn/dpop.js';
import { DpopProofVerifier } from '../authn/dpop-proof.js';
import { MemoryProofReplayCache, SharedProofReplayCache } from '../authn/dpop-replay.js';
import { DpopNonces } from '../authn/dpop-nonce.js';
import { MtlsAuthenticator } from '../authn/mtls.js';
import type { KeyEncryptionKey } from '../lib/key-encryption.js';
import { ISSUER_PATHS, type IssuerConfig } from '../config/issuer.js';
import type { Config } from '../config/schema.js';
import type { DeepReadonly } from '../lib/deep-freeze.js';
import type { Authenticator, BodyIntake, Handler } from '../pipeline/stage.js';
import type { CertificateStore, Client, ClientCa, ClientStore, CredentialStore, SigningKeyStore, StoreChange, StoreWatch } from '../store/contract.js';
import type { IssuedClientCertificate } from '../tls/client-ca.js';
import { MemoryLimiterBackend, type LimiterBackend } from '../quota/backend.js';
import { openCredentialStore } from '../store/open.js';
import { openVerifiedKeyEncryptionKey } from './master-key.js';
import { ClientAuthenticator, OAuthClientAuthenticator } from './client-auth.js';
import {
  FormIntake,
  IntrospectionEndpoint,
  JwksEndpoint,
  MetadataEndpoint,
  OAUTH_BODY_LIMIT_BYTES,
  RevocationEndpoint,
  TokenEndpoint,
  tokenRequestPrecheck,
  type IssuerContext,
} from './endpoints.js';
import { initClientCa, issueForClient, openClientCa } from './client-ca-store.js';
import { ensureSigningKey, revokeSigningKey, rotateSigningKeys, type RotationReport } from './key-rotation.js';
import type { KeyRing } from './key-ring.js';
import type { SigningKeyRevocation } from './key-schedule.js';
import { KID_SHAPE, type SigningAlgorithm } from './signing-key.js';
import { RevocationSet } from './revocations.js';
import { CertificateRenewalEndpoint, RENEWAL_BODY_LIMIT_BYTES, RENEWALS_PER_HOUR, type CertificateIssued } from './renewal.js';
import { TokenSigner } from './tokens.js';

export interface IssuerDeps {
  readonly log: Logger;
  /** GATEHOUSE_MASTER_KEY as read by the CLI; otherwise data_dir/master.key is used (created once, 0600). */
  readonly masterKey?: string | undefined;
  readonly now?: () => number;
  /** Where client authentication's brute-force limits count (default: this process's memory). */
  readonly limiters?: LimiterBackend;
}

/**
 * What the issuer reports for the audit chain (LOG-11), each once when it happens: the key signing this instance's tokens
 * changed (a rotation took effect, a revocation moved signing on), and the store became unreadable or readable again.
 */
export type IssuerEvent =
  | { readonly type: 'signing_key_changed'; readonly kid: string | null; readonly previous_kid: string | null }
  | { readonly type: 'store_unavailable'; readonly error: string }
  | { readonly type: 'store_recovered'; readonly unavailable_ms: number }
  | CertificateIssued;

/** What an Issuer is made of (Issuer.open reads and checks it all first). */
interface IssuerParts {
  readonly settings: DeepReadonly<IssuerConfig>;
  readonly store: CredentialStore;
  readonly ring: KeyRing;
  readonly revocations: RevocationSet;
  readonly log: Logger;
  readonly now: () => number;
  /** The configured port (0 until the listener is bound: see started()). */
  readonly port: number;
  readonly limiters: LimiterBackend;
  /** The key-encryption key, proven against the stored signing keys: opens the client CA, derives the DPoP nonce key. */
  readonly kek: KeyEncryptionKey;
  /** The listener asks for client certificates (tls.client_ca or tls.store_client_ca). */
  readonly clientCertificates: boolean;
  /** It trusts the store's client CA (tls.store_client_ca): certificates of that CA may be renewed at the renewal endpoint. */
  readonly storeClientCa: boolean;
}

/** One built-in endpoint, which routes.ts compiles into a route like any other. */
export interface IssuerEndpoint {
  readonly id: string;
  readonly path: string;
  readonly methods: readonly ('GET' | 'POST')[];
  readonly bodyLimitBytes: number;
  /** The OAuth endpoints: form intake, then client authentication; metadata and JWKS are public (anonymous). */
  readonly oauth: { readonly intake: BodyIntake; readonly authenticator: Authenticator } | undefined;
  /** An endpoint outside OAuth that needs a credential (certificate renewal: the client certificate being renewed). */
  readonly authenticator?: Authenticator;
  readonly handler: Handler;
}

/** How long the record of an issued client certificate is kept after it expired (`certs list` shows it until then). */
const CERTIFICATE_RECORD_RETENTION_MS = 30 * 86_400_000;
/** Purges of expired revocations and keys from the store run at most this often. */
const PURGE_INTERVAL_MS = 60_000;
/** While refreshes keep failing, the error is logged again this often (an operator may have missed the first line). */
const FAILURE_LOG_INTERVAL_MS = 60_000;
/** Tokens with kids this instance does not hold make it re-read the store at most this often (see resolveKid). */
export const KID_LOOKUP_INTERVAL_MS = 1000;

export class Issuer {
  readonly bearer: BearerAuthenticator;
  /** `Authorization: DPoP` on resource routes: the bearer verifier's checks, then the proof (RFC 9449 §7). */
  readonly dpop: DpopAuthenticator;
  /**
   * Client certificates, for `mtls` routes and the OAuth endpoints alike: one verification per connection, and revoked
   * certificates (`gatehouse certs revoke`, on any instance) refused on their next request.
   */
  readonly mtls: MtlsAuthenticator;
  readonly endpoints: readonly IssuerEndpoint[];
  private names: { readonly issuer: string; readonly audience: string };
  private timer: NodeJS.Timeout | undefined;
  private lastPurge = 0;
  /** When the current run of refresh failures began (undefined while refreshes succeed), and when it was last logged. */
  private failingSince: number | undefined;
  private lastFailureLog = 0;
  private signingKid: string | null;
  private onEvent: (event: IssuerEvent) => void = () => undefined;
  /** The refresh running now, and the one queued behind it (see refresh()). */
  private refreshing: Promise<void> | undefined;
  private queuedRefresh: Promise<void> | undefined;
  private watch: StoreWatch | undefined;
  /** The client CA certificate the store holds (`gatehouse ca init`), and who wants to know when it appears. */
  private clientCa: string | undefined;
  private onClientCa: ((certPem: string) => void) | undefined;
  /** The re-read for unknown kids in progress, and when the last one began (performance.now(): immune to clock steps). */
  private kidLookup: Promise<void> | undefined;
  private lastKidLookup = Number.NEGATIVE_INFINITY;
  private closed = false;

  private readonly settings: DeepReadonly<IssuerConfig>;
  private readonly store: CredentialStore;
  /** The master key's key-encryption key: seals new signing keys (a revocation's successor). */
  private readonly kek: KeyEncryptionKey;
  private readonly ring: KeyRing;
  private readonly revocations: RevocationSet;
  private readonly log: Logger;
  private readonly now: () => number;

  private constructor(parts: IssuerParts) {
    const { settings, store, ring, revocations, now, port, limiters, kek } = parts;
    this.settings = settings;
    this.store = store;
    this.kek = kek;
    this.ring = ring;
    this.revocations = revocations;
    this.log = parts.log;
    this.now = now;
    // The key of DPoP nonces, when proofs must carry one (derived from the master key: the same on every instance).
    const nonceKey = settings.dpop.require_nonce ? kek.deriveKey('dpop-nonce') : undefined;
    const { clientCertificates } = parts;
    this.names = Issuer.names(settings, port);
    this.signingKid = this.currentSigningKid();
    const issuer = (): string => this.identifier;
    const keys: VerificationKeys = { verificationKey: (kid) => ring.verificationKey(kid), resolveKid: (kid) => this.resolveKid(kid) };
    this.bearer = new BearerAuthenticator(keys, revocations, {
      // Read on every use: with port 0 the identifier is known only once the listener is bound.
      get issuer() {
        return issuer();
      },
      clockToleranceS: settings.clock_tolerance_s,
      // An access token is never older than its lifetime; the tolerance covers clock skew between instances.
      maxTokenAgeS: settings.access_token_ttl_s,
      maxTokenBytes: settings.max_token_bytes,
      cacheEntries: settings.verified_token_cache,
      now,
    });
    // One replay cache for the token endpoint and the resource routes: a proof is good once, wherever it is presented —
    // and, when instances or workers share their limits, on whichever of them it is presented (OA-20).
    const proofLifetimeS = settings.dpop.proof_max_age_s + settings.clock_tolerance_s;
    const replays = limiters.shared
      ? new SharedProofReplayCache(limiters.rate({ keyPrefix: 'dpop-jti', points: 1, durationS: proofLifetimeS }, 'deny'))
      : new MemoryProofReplayCache(settings.dpop.replay_cache_entries, now);
    const nonces = nonceKey === undefined ? undefined : new DpopNonces(nonceKey, settings.dpop.nonce_lifetime_s, now);
    const proofs = new DpopProofVerifier({ maxAgeS: settings.dpop.proof_max_age_s, clockToleranceS: settings.clock_tolerance_s, replays, nonces, now });
    this.dpop = new DpopAuthenticator(this.bearer, proofs);
    const seen = (client: Client, readAt: number): void => revocations.clientSeen(client, readAt);
    const clientAuth = new ClientAuthenticator(store, settings.client_auth, parts.log, seen, now, limiters);
    const ctx: IssuerContext = {
      issuer,
      defaultAudience: () => this.defaultAudience,
      signer: new TokenSigner(ring, issuer, settings.access_token_ttl_s, now),
      bearer: this.bearer,
      proofs,
      clientCertificates,
      revocations,
      ring,
      clockToleranceS: settings.clock_tolerance_s,
      jwksMaxAgeS: Math.min(300, settings.key_activation_delay_s),
      now,
    };
    this.mtls = new MtlsAuthenticator(now, revocations);
    const authenticator = new OAuthClientAuthenticator(clientAuth, this.mtls);
    const formIntake = new FormIntake();
    const post = (id: string, path: string, handler: Handler, intake: BodyIntake): IssuerEndpoint => ({
      id,
      path,
      methods: ['POST'],
      bodyLimitBytes: OAUTH_BODY_LIMIT_BYTES,
      oauth: { intake, authenticator },
      handler,
    });
    const get = (id: string, path: string, handler: Handler): IssuerEndpoint => ({ id, path, methods: ['GET'], bodyLimitBytes: 0, oauth: undefined, handler });
    const endpoints: IssuerEndpoint[] = [
      post('oauth-token', ISSUER_PATHS.token, new TokenEndpoint(ctx), new FormIntake(tokenRequestPrecheck)),
      post('oauth-introspect', ISSUER_PATHS.introspect, new IntrospectionEndpoint(ctx), formIntake),
      post('oauth-revoke', ISSUER_PATHS.revoke, new RevocationEndpoint(ctx), formIntake),
      get('oauth-metadata', ISSUER_PATHS.metadata, new MetadataEndpoint(ctx)),
      get('oauth-jwks', ISSUER_PATHS.jwks, new JwksEndpoint(ctx)),
    ];
    if (parts.storeClientCa) {
      const renewals = limiters.rate({ keyPrefix: 'cert-renewal', points: RENEWALS_PER_HOUR, durationS: 3600 }, 'degrade');
      const renewal = new CertificateRenewalEndpoint(store, kek, (event) => this.onEvent(event), now, renewals);
      endpoints.push({
        id: 'certificate-renewal',
        path: ISSUER_PATHS.renewCertificate,
        methods: ['POST'],
        bodyLimitBytes: RENEWAL_BODY_LIMIT_BYTES,
        oauth: undefined,
        authenticator: this.mtls,
        handler: renewal,
      });
    }
    this.endpoints = endpoints;
  }

  /** Opens the store, creates the first signing key when there is none, and loads keys and revocations. */
  static async open(config: Config, settings: DeepReadonly<IssuerConfig>, deps: IssuerDeps): Promise<Issuer> {
    const now = deps.now ?? Date.now;
    const store = await openCredentialStore(config);
    let watch: StoreWatch | undefined;
    try {
      // Listening starts before anything is read, so no change committed from here on is missed: one that arrives before
      // the issuer exists makes it refresh once more as soon as it does.
      let issuer: Issuer | undefined;
      let missed = false;
      watch = await store.watch?.({
        onChange: (change) => {
          if (issuer !== undefined) issuer.storeChanged(change);
          else missed = true;
        },
        onLost: (error) => deps.log.warn({ err: error }, 'lost the store change listener; changes are picked up by the periodic refresh until it is back'),
        onListening: (downMs) => deps.log.info({ down_ms: downMs }, 'store change listener reconnected; re-reading keys, revocations and clients'),
      });
      // Every stored key is decrypted once, here: the proof that the master key is right is the ring itself.
      const { kek, ring } = await openVerifiedKeyEncryptionKey(config, store, deps.masterKey, now);
      const { key, created } = await ensureSigningKey(store, kek, settings.signing_alg, now());
      if (created) {
        deps.log.info({ kid: key.kid, alg: key.alg }, 'created the first access-token signing key');
        await ring.refresh();
      }
      const revocations = new RevocationSet(store, now);
      await revocations.refresh();
      issuer = new Issuer({
        settings,
        store,
        ring,
        revocations,
        log: deps.log,
        now,
        port: config.server.port,
        limiters: deps.limiters ?? new MemoryLimiterBackend(),
        kek,
        clientCertificates: config.tls.client_ca !== undefined || config.tls.store_client_ca,
        storeClientCa: config.tls.store_client_ca,
      });
      issuer.watch = watch;
      issuer.clientCa = (await store.getClientCa())?.certPem;
      if (missed) await issuer.refresh();
      return issuer;
    } catch (error) {
      await watch?.close();
      await store.close();
      throw error;
    }
  }

  /** The `iss` of every token and the metadata's `issuer`: configured, or https://localhost:<listener port>. */
  get identifier(): string {
    return this.names.issuer;
  }

  /** The audience of bearer routes without their own (read on every bearer request, hence kept ready-made). */
  get defaultAudience(): string {
    return this.names.audience;
  }

  private static names(settings: DeepReadonly<IssuerConfig>, port: number): { readonly issuer: string; readonly audience: string } {
    const issuer = settings.issuer ?? `https://localhost:${port}`;
    return { issuer, audience: settings.default_audience ?? issuer };
  }

  /** The key that signs now; null while none can (every key retired or revoked, the successor still pending). */
  currentSigningKid(): string | null {
    try {
      return this.ring.signingKey().kid;
    } catch {
      return null;
    }
  }

  /** False while the store's refreshes fail (the issuer serves from what it read last). */
  get storeAvailable(): boolean {
    return this.failingSince === undefined;
  }

  /** The store's clients, signing keys and issued certificates, for the admin API (which uses the CLI's operations on them). */
  get credentials(): ClientStore & SigningKeyStore & CertificateStore {
    return this.store;
  }

  /** When the signing key was made and when a rotation retires it (see KeyRing.signerTimes). */
  get signerTimes(): { readonly createdAt: number; readonly retiresAt: number | null } | undefined {
    return this.ring.signerTimes();
  }

  /** `gatehouse ca init` for the admin API, with this issuer's master key (ClientCaError 'ca_exists' when there is one). */
  initClientCa(commonName: string): Promise<ClientCa> {
    return initClientCa(this.store, this.kek, { commonName, now: this.now() });
  }

  /** `gatehouse certs issue` for the admin API: the store's CA opened with this issuer's master key (ClientCaError, CsrError). */
  async issueClientCertificate(
    client: Client,
    opts: { readonly ttlS: number; readonly csrPem?: string },
  ): Promise<{ readonly issued: IssuedClientCertificate; readonly caPem: string }> {
    const ca = await openClientCa(this.store, this.kek);
    return { issued: await issueForClient(this.store, ca, client, { ...opts, now: this.now() }), caPem: ca.certPem };
  }

  /** `gatehouse keys rotate [--now]` for the admin API, with this issuer's master key, lifetimes and (by default) algorithm. */
  rotateSigningKeys(opts: {
    readonly alg: SigningAlgorithm | undefined;
    readonly immediately: boolean;
  }): Promise<{ readonly report: RotationReport; readonly changes: Readonly<Record<string, unknown>> }> {
    return rotateSigningKeys(this.store, this.kek, {
      alg: opts.alg ?? this.settings.signing_alg,
      now: this.now(),
      activationDelayS: this.settings.key_activation_delay_s,
      maxTokenLifetimeS: this.settings.access_token_ttl_s,
      immediately: opts.immediately,
    });
  }

  /** `gatehouse keys revoke` for the admin API, with this issuer's master key and algorithm (refresh() then applies it here). */
  revokeSigningKey(kid: string): Promise<SigningKeyRevocation> {
    return revokeSigningKey(this.store, this.kek, { kid, alg: this.settings.signing_alg, now: this.now() });
  }

  /** The client CA certificate (PEM) the store holds now, if `gatehouse ca init` made one. */
  get clientCaCertificate(): string | undefined {
    return this.clientCa;
  }

  /** `listener` hears of the store's client CA when it appears or changes (a store copied in, say), from any refresh on. */
  followClientCa(listener: (certPem: string) => void): void {
    this.onClientCa = listener;
  }

  private learnClientCa(certPem: string | undefined): void {
    // A CA is never removed from a store; one that reads as absent (a replaced store?) keeps the one in force.
    if (certPem === undefined || certPem === this.clientCa) return;
    this.clientCa = certPem;
    this.log.info('client CA read from the credential store');
    this.onClientCa?.(certPem);
  }

  /** Where IssuerEvents go (the gateway's audit log); set before started(). */
  reportTo(onEvent: (event: IssuerEvent) => void): void {
    this.onEvent = onEvent;
  }

  /** Called once the listener is bound (port 0 becomes the real port), then starts the refresh loop. */
  started(port: number): void {
    this.names = Issuer.names(this.settings, port);
    this.timer ??= setInterval(() => void this.refresh(), this.settings.refresh_interval_ms);
    this.timer.unref();
  }

  /**
   * A token names a kid this instance does not hold. Another instance may have begun signing with a key this one has not
   * read yet (`keys rotate --now`, the new key of an emergency revocation) a moment before the change notice arrives here;
   * one re-read settles it. Only kids shaped like this issuer's (RFC 7638 thumbprints) are looked up, callers at the same
   * time share one re-read, and re-reads for unknown kids begin at most once per KID_LOOKUP_INTERVAL_MS (a caller waits
   * for the next one), so forged kids cannot make the store do more than that.
   */
  private resolveKid(kid: string): Promise<void> {
    if (!KID_SHAPE.test(kid) || this.closed) return Promise.resolve();
    this.kidLookup ??= this.lookUpKeys().finally(() => {
      this.kidLookup = undefined;
    });
    return this.kidLookup;
  }

  private async lookUpKeys(): Promise<void> {
    const wait = this.lastKidLookup + KID_LOOKUP_INTERVAL_MS - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    if (this.closed) return;
    this.lastKidLookup = performance.now();
    await this.refresh();
  }

  /** A change notified by the store: a revocation is taken as it is, anything else is re-read. */
  private storeChanged(change: StoreChange): void {
    if (change.kind === 'revoked') this.revocations.learn(change.revocation);
    else void this.refresh();
  }

  /**
   * Re-reads signing keys, revocations and client states (see refreshOnce). One runs at a time: asked while one is running,
   * whose reads may predate the change that asked, exactly one more runs after it, shared by everyone who asked meanwhile.
   * So a burst of notifications costs at most two reads, and a read never overwrites a newer one.
   */
  refresh(): Promise<void> {
    if (this.refreshing === undefined) {
      this.refreshing = this.refreshOnce().finally(() => (this.refreshing = undefined));
      return this.refreshing;
    }
    this.queuedRefresh ??= this.refreshing
      .catch(() => undefined)
      .then(() => {
        this.queuedRefresh = undefined;
        return this.refresh();
      });
    return this.queuedRefresh;
  }

  /**
   * Re-reads signing keys, revocations and client states, and purges expired rows from the store. A failed read keeps the
   * previous state; the purge runs either way (a store that cannot be read must not also grow without bound). Failures are
   * logged when they start and then once a minute while they last.
   */
  private async refreshOnce(): Promise<void> {
    const now = this.now();
    let failure: unknown;
    try {
      const [, , clientCa] = await Promise.all([this.ring.refresh(), this.revocations.refresh(), this.store.getClientCa()]);
      this.learnClientCa(clientCa?.certPem);
    } catch (error) {
      failure = error;
    }
    if (now - this.lastPurge >= PURGE_INTERVAL_MS) {
      this.lastPurge = now;
      try {
        const [revocations, keys, certificates] = await Promise.all([
          this.store.purgeExpiredRevocations(now),
          this.store.purgeExpiredSigningKeys(now),
          this.store.purgeExpiredCertificates(now - CERTIFICATE_RECORD_RETENTION_MS),
        ]);
        if (revocations + keys + certificates > 0)
          this.log.debug({ revocations, keys, certificates }, 'purged expired revocations, signing keys and certificate records');
      } catch (error) {
        failure ??= error;
      }
    }
    // Checked whether or not the read failed: a pending key activates by the clock alone.
    const kid = this.currentSigningKid();
    if (kid !== this.signingKid) {
      this.onEvent({ type: 'signing_key_changed', kid, previous_kid: this.signingKid });
      this.signingKid = kid;
    }
    if (failure === undefined) {
      if (this.failingSince !== undefined) {
        this.log.info('issuer state refresh recovered');
        this.onEvent({ type: 'store_recovered', unavailable_ms: now - this.failingSince });
      }
      this.failingSince = undefined;
      return;
    }
    if (this.failingSince === undefined) this.onEvent({ type: 'store_unavailable', error: errorSummary(failure) });
    if (this.failingSince === undefined || now - this.lastFailureLog >= FAILURE_LOG_INTERVAL_MS) {
      this.lastFailureLog = now;
      this.log.error(
        { err: errorSummary(failure), failing_since: new Date(this.failingSince ?? now).toISOString() },
        'issuer state refresh failed; keeping the previous keys and revocations',
      );
    }
    this.failingSince ??= now;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    await this.watch?.close();
    await this.refreshing;
    await this.store.close();
  }
}

/** An error as the log and the audit chain name it: its message, one line, bounded. */
function errorSummary(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/[\r\n]+/g, ' ').slice(0, 300);
}
