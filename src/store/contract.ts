// The CredentialStore contract: clients, signing keys and revoked token ids — one contract, several backends
// (SQLite embedded default; PostgreSQL for scale-out). Every method validates rows it reads (the database is outside input).

/** How many secrets a client may hold: the current one and, while a secret is rotated, the previous one. */
export const MAX_SECRETS_PER_CLIENT = 2;

/** An argon2id hash of one client secret. Up to two are active while a secret is rotated. */
export interface SecretHash {
  /** PHC string, `$argon2id$v=19$m=…,t=…,p=…$salt$hash`. */
  readonly hash: string;
  readonly createdAt: number;
  /** Epoch ms after which this secret no longer authenticates (the old secret during rotation); null = no expiry. */
  readonly expiresAt: number | null;
}

export interface Client {
  /** Random, URL-safe, assigned by the store's caller; never reused. */
  readonly id: string;
  readonly name: string;
  readonly secrets: readonly SecretHash[];
  readonly scopes: readonly string[];
  readonly audiences: readonly string[];
  readonly enabled: boolean;
  /**
   * Epoch seconds: access tokens of this client with an earlier `iat` are refused, whatever the client's state later. A
   * disable sets it to the second after the disable, so a later enable never brings back a token issued before it.
   * null = no cut-off.
   */
  readonly tokensNotBeforeS: number | null;
  /** Lifetime of this client's access tokens in seconds, at most the issuer's access_token_ttl_s; null = the issuer's. */
  readonly accessTokenTtlS: number | null;
  /** RFC 9449: the client gets DPoP-bound tokens only; a token request without a valid DPoP proof is refused. */
  readonly requireDpop: boolean;
  /**
   * RFC 8705 `tls_client_auth`: the identity (URI or DNS SAN, as the mtls authenticator reads it) of the client certificate
   * this client authenticates with at the token endpoint; null = it authenticates with a secret.
   */
  readonly tlsClientAuthSubject: string | null;
  readonly createdAt: number;
  readonly updatedAt: number;
}

export type SigningAlgorithm = 'EdDSA' | 'ES256';

export interface SigningKey {
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  /** Public JWK as JSON text (kty, crv, x[, y], kid, alg, use:"sig"). */
  readonly publicJwk: string;
  /** AES-256-GCM ciphertext of the PKCS#8 private key under the key-encryption key (iv ‖ tag ‖ ciphertext), base64url. */
  readonly encryptedPrivateKey: string;
  readonly createdAt: number;
  /** Published from createdAt; used for signing only from activatesAt (so verifiers saw it in the JWKS first). */
  readonly activatesAt: number;
  /** Set when a newer key took over signing; the key stays published until expiresAt. */
  readonly retiredAt: number | null;
  /** After this the key is neither used nor published (every token it signed has expired). null = not retired. */
  readonly expiresAt: number | null;
  /** Set by an emergency revocation (`gatehouse keys revoke`): unpublished at that moment, its tokens refused. */
  readonly revokedAt: number | null;
}

export interface SigningKeyChange {
  readonly update: readonly SigningKey[];
  readonly insert: readonly SigningKey[];
}

export interface Revocation {
  readonly iss: string;
  readonly jti: string;
  /** The revoked token's own exp: the revocation is kept only that long. */
  readonly expiresAt: number;
}

/**
 * A change another process (or this one) made to the store, as a backend that can tell learns of it. A hint, never the
 * state itself, except for a revocation, which only ever refuses more: the receiver re-reads what changed. Notifications
 * can be lost (the listener's connection dropped), so `resync` says "re-read everything", and the periodic refresh stays
 * the safety net.
 */
export type StoreChange =
  | { readonly kind: 'revoked'; readonly revocation: Revocation }
  | { readonly kind: 'clients' | 'keys' | 'revocations' | 'certificates' | 'resync' };

/** A running subscription to StoreChanges. */
export interface StoreWatch {
  /** Stops listening; no change is reported after it resolves. */
  close(): Promise<void>;
}

export interface StoreWatchEvents {
  readonly onChange: (change: StoreChange) => void;
  /** The listener lost its connection (changes are missed until `onListening` reports it back, followed by a `resync`). */
  readonly onLost?: (error: string) => void;
  readonly onListening?: (downMs: number) => void;
}

export class StoreError extends Error {
  constructor(
    readonly code: 'not_found' | 'conflict' | 'invalid' | 'unavailable',
    message: string,
  ) {
    super(message);
    this.name = 'StoreError';
  }
}

/** OAuth clients and their secret hashes. */
export interface ClientStore {
  /** Throws StoreError('conflict') when the id exists. */
  createClient(client: Client): Promise<void>;
  getClient(id: string): Promise<Client | undefined>;
  listClients(): Promise<readonly Client[]>;
  /** Applies `change` to the current row inside one transaction; throws StoreError('not_found'). */
  updateClient(id: string, change: (current: Client) => Client): Promise<Client>;
  removeClient(id: string): Promise<boolean>;
}

/** Access-token signing keys (private keys sealed under the key-encryption key). */
export interface SigningKeyStore {
  addSigningKey(key: SigningKey): Promise<void>;
  listSigningKeys(): Promise<readonly SigningKey[]>;
  /** Adds `next` and, in the same transaction, marks `retire.kid` retired and unpublished after `retire.expiresAt`. */
  rotateSigningKey(next: SigningKey, retire: { readonly kid: string; readonly retiredAt: number; readonly expiresAt: number } | undefined): Promise<void>;
  /**
   * Applies `change` to the current keys inside one transaction: the keys it returns in `update` are written back (by
   * kid; a kid the store does not hold is StoreError('not_found')), `insert` is added. For changes that depend on the
   * whole key set (an emergency revocation and the succession it forces); `change` must be synchronous and pure.
   */
  changeSigningKeys(change: (current: readonly SigningKey[]) => SigningKeyChange): Promise<SigningKeyChange>;
  /** Deletes keys whose expiresAt passed. Returns how many. */
  purgeExpiredSigningKeys(now: number): Promise<number>;
}

/** Revoked access tokens, keyed by issuer and token id, never by the token string. */
export interface RevocationStore {
  /** Idempotent: revoking a revoked token again changes nothing. */
  revoke(revocation: Revocation): Promise<void>;
  /** Revocations still in force, for warming an in-memory revocation set at start. */
  listRevocations(now: number): Promise<readonly Revocation[]>;
  /** Deletes revocations whose token expired. Returns how many. */
  purgeExpiredRevocations(now: number): Promise<number>;
}

/**
 * The client-certificate authority (`gatehouse ca init`): one per store, so every gateway sharing the store trusts, and
 * every admin command issues under, the same CA.
 */
export interface ClientCa {
  /** PEM of the self-signed CA certificate. */
  readonly certPem: string;
  /** AES-256-GCM ciphertext of its PKCS#8 private key under the key-encryption key (AAD `client-ca`), base64url. */
  readonly encryptedPrivateKey: string;
  readonly createdAt: number;
}

/** The record of a certificate the client CA issued (never its key, which only its holder has). */
export interface IssuedCertificate {
  /** Hex, lower case, as the CA assigned it (unique under this CA). */
  readonly serial: string;
  readonly clientId: string;
  /** The identity it carries: the URI or DNS SAN the mtls authenticator reads. */
  readonly subject: string;
  /** RFC 8705 x5t#S256 of the certificate: what revocation checks, cert-bound tokens and the audit name it by. */
  readonly thumbprint: string;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly issuedAt: number;
  /** Set by `gatehouse certs revoke`: the certificate is refused from then on, inside its validity too. */
  readonly revokedAt: number | null;
}

/** The client CA and the certificates it issued. */
export interface CertificateStore {
  /** Throws StoreError('conflict') when the store has a client CA already (it is never replaced in place). */
  createClientCa(ca: ClientCa): Promise<void>;
  getClientCa(): Promise<ClientCa | undefined>;
  /** Throws StoreError('conflict') for a serial already recorded. */
  addIssuedCertificate(certificate: IssuedCertificate): Promise<void>;
  listIssuedCertificates(): Promise<readonly IssuedCertificate[]>;
  /** The record of the certificate with this x5t#S256 thumbprint, if the client CA issued it. */
  findIssuedCertificate(thumbprint: string): Promise<IssuedCertificate | undefined>;
  /**
   * Marks the certificate revoked at `at` unless it already is (the first revocation's time stays). Returns the record as
   * stored; throws StoreError('not_found') for an unknown serial.
   */
  revokeCertificate(serial: string, at: number): Promise<IssuedCertificate>;
  /** Revoked certificates still inside their validity at `now`: the ones a gateway must refuse that TLS would accept. */
  listRevokedCertificates(now: number): Promise<readonly IssuedCertificate[]>;
  /** Deletes the records of certificates that expired before `before`. Returns how many. */
  purgeExpiredCertificates(before: number): Promise<number>;
}

/**
 * Asynchronous so that a network backend (PostgreSQL) fits the same contract; the SQLite backend resolves at once.
 * Every write is one transaction: a crash leaves the previous state or the new one, never a mix.
 */
export interface CredentialStore extends ClientStore, SigningKeyStore, RevocationStore, CertificateStore {
  /**
   * Optional: reports changes committed by others — PostgreSQL: every write, from any process, as it commits
   * (LISTEN/NOTIFY); SQLite: a `resync` within a quarter second of another process's commit (`PRAGMA data_version`).
   * Resolves once listening, so a caller that starts watching and then reads the store misses nothing. A backend without
   * it is only re-read periodically. Throws StoreError('unavailable') when it cannot start.
   */
  watch?(events: StoreWatchEvents): Promise<StoreWatch>;

  close(): Promise<void>;

  // Copying a whole store (`gatehouse store copy`)
  /**
   * Every client (secret hashes as stored), every signing key and the client CA (private keys still sealed under the
   * key-encryption key, so no master key is needed), every certificate record and the revocations in force at `at` (default: the store's clock), read in one consistent
   * read transaction: a copy never mixes states from before and after a concurrent write.
   */
  exportSnapshot(at?: number): Promise<StoreSnapshot>;
  /**
   * Writes `snapshot` as it is (ids, hashes, ciphertexts and time stamps unchanged) into an empty store, in one
   * transaction. Throws StoreError('conflict') when the store holds any client, signing key, revocation (expired ones
   * too), client CA or certificate record, and then changes nothing; importers running at once take turns, so at most one of them fills the store.
   */
  importSnapshot(snapshot: StoreSnapshot): Promise<void>;
}

/** What `exportSnapshot` reads and `importSnapshot` writes: a store's whole content, not one row of it decrypted. */
export interface StoreSnapshot {
  /** Epoch ms the snapshot was read at: `revocations` are those still in force then. */
  readonly at: number;
  readonly clients: readonly Client[];
  readonly signingKeys: readonly SigningKey[];
  readonly revocations: readonly Revocation[];
  /** The client CA (its key still sealed) and every certificate it issued, revoked ones included. */
  readonly clientCa: ClientCa | null;
  readonly certificates: readonly IssuedCertificate[];
}
