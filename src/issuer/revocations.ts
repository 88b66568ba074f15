// What the bearer and mtls paths must know on every request, in memory: revoked token ids, revoked client certificates
// (`gatehouse certs revoke`) and which clients may still use their tokens (enabled ones, for tokens issued since their
// last disable). All are written through the store first (so other instances and restarts see them) and refreshed from it, so a
// revocation or a `clients disable` made by another process takes effect within one refresh interval.
import type { RevocationList } from '../authn/bearer.js';
import type { CertificateStore, Client, ClientStore, Revocation, RevocationStore } from '../store/contract.js';

export class RevocationSet implements RevocationList {
  /** `iss \n jti` → epoch ms after which the revocation is moot (the token expired). */
  private revoked = new Map<string, number>();
  /**
   * Clients that exist and are enabled, each with the earliest `iat` (epoch seconds) its tokens may have; tokens of any
   * other client_id are refused.
   */
  private activeClients = new Map<string, number>();
  /**
   * Clients that authenticated from a store read that began no earlier than the current snapshot's: they may be newer
   * than the snapshot (added since), so a refresh whose own read began earlier keeps them. Keyed by when that read began.
   */
  private seenSince = new Map<string, { readonly readAt: number; readonly notBeforeS: number }>();
  /** When the read behind the current snapshot began. */
  private snapshotAt = Number.NEGATIVE_INFINITY;
  /** Clients the last read found disabled: their tokens are refused without a lookup. */
  private disabledClients = new Set<string>();
  /** Client ids a lookup found missing or disabled since the last read → when that answer stops counting (bounded). */
  private readonly missing = new Map<string, number>();
  /** The lookup under way for each client id (single flight). */
  private readonly lookups = new Map<string, Promise<void>>();
  /** Thumbprints (x5t#S256) of revoked client certificates still inside their validity. */
  private revokedCertificates: ReadonlySet<string> = new Set();

  constructor(
    private readonly store: ClientStore & RevocationStore & Pick<CertificateStore, 'listRevokedCertificates'>,
    private readonly now: () => number = Date.now,
  ) {}

  isRevoked(iss: string, jti: string): boolean {
    const until = this.revoked.get(key(iss, jti));
    return until !== undefined && until > this.now();
  }

  isCertificateRevoked(thumbprint: string): boolean {
    return this.revokedCertificates.has(thumbprint);
  }

  acceptsClientToken(clientId: string, issuedAtS: number): boolean | 'unknown' {
    const notBefore = this.activeClients.get(clientId);
    if (notBefore !== undefined) return issuedAtS >= notBefore;
    if (this.disabledClients.has(clientId)) return false;
    const until = this.missing.get(clientId);
    if (until !== undefined && until > this.now()) return false;
    return 'unknown';
  }

  /**
   * A client this instance has not seen: added on another instance or with the CLI since the last read (its change notice
   * may still be on the way). One store lookup per id at a time; a client the store does not have, or has disabled, is
   * remembered as such for MISSING_TTL_MS (at most MAX_MISSING ids), so its tokens cannot make every request a lookup.
   * A lookup that fails leaves the client unknown (its tokens are refused until the store answers again).
   */
  resolveClient(clientId: string): Promise<void> {
    let lookup = this.lookups.get(clientId);
    if (lookup === undefined) {
      const readAt = this.now();
      lookup = this.store
        .getClient(clientId)
        .then(
          (client) => {
            if (client?.enabled === true) this.clientSeen(client, readAt);
            else this.rememberMissing(clientId);
          },
          () => undefined,
        )
        .finally(() => this.lookups.delete(clientId));
      this.lookups.set(clientId, lookup);
    }
    return lookup;
  }

  private rememberMissing(clientId: string): void {
    if (this.missing.size >= MAX_MISSING) this.missing.delete(this.missing.keys().next().value as string);
    this.missing.set(clientId, this.now() + MISSING_TTL_MS);
  }

  /** Stores the revocation first: once this resolves, this instance refuses the token and a restart still does. */
  async revoke(revocation: Revocation): Promise<void> {
    await this.store.revoke(revocation);
    this.revoked.set(key(revocation.iss, revocation.jti), revocation.expiresAt);
  }

  /** A revocation another instance stored (a change notification): refused here from now on, as if refreshed. */
  learn(revocation: Revocation): void {
    const id = key(revocation.iss, revocation.jti);
    if (revocation.expiresAt > (this.revoked.get(id) ?? 0)) this.revoked.set(id, revocation.expiresAt);
  }

  /**
   * A client that just authenticated, as read from the store at `readAt`, exists and is enabled (it may be newer than the
   * last refresh). A read older than the current snapshot says nothing new — the client may have been disabled in
   * between, and an authentication that waited for argon2 must not revive it — so it is ignored.
   */
  clientSeen(client: Client, readAt: number): void {
    if (!client.enabled || readAt < this.snapshotAt) return;
    const notBeforeS = client.tokensNotBeforeS ?? 0;
    this.activeClients.set(client.id, Math.max(notBeforeS, this.activeClients.get(client.id) ?? 0));
    this.seenSince.set(client.id, { readAt, notBeforeS });
  }

  /**
   * Re-reads revocations and client states, dropping expired revocations. Validate-then-swap: if the store fails, the
   * previous state stays and the error goes to the caller.
   */
  async refresh(): Promise<void> {
    const now = this.now();
    const [revocations, clients, certificates] = await Promise.all([
      this.store.listRevocations(now),
      this.store.listClients(),
      this.store.listRevokedCertificates(now),
    ]);
    const revoked = new Map<string, number>();
    for (const revocation of revocations) revoked.set(key(revocation.iss, revocation.jti), revocation.expiresAt);
    // A revocation made here while the read was in flight must not be lost by the swap.
    for (const [id, until] of this.revoked) if (until > now && !revoked.has(id)) revoked.set(id, until);
    this.revoked = revoked;
    // Certificate revocations are only ever added (a record is never un-revoked), so the read replaces the set whole.
    this.revokedCertificates = new Set(certificates.map((certificate) => certificate.thumbprint));
    const active = new Map<string, number>();
    const disabled = new Set<string>();
    for (const client of clients) {
      if (client.enabled) active.set(client.id, client.tokensNotBeforeS ?? 0);
      else disabled.add(client.id);
    }
    const seenSince = new Map<string, { readonly readAt: number; readonly notBeforeS: number }>();
    for (const [id, seen] of this.seenSince) {
      // Read before this refresh's read began: this refresh knows better (the client may be disabled now).
      if (seen.readAt < now) continue;
      active.set(id, Math.max(seen.notBeforeS, active.get(id) ?? 0));
      seenSince.set(id, seen);
    }
    this.activeClients = active;
    this.disabledClients = disabled;
    this.seenSince = seenSince;
    this.snapshotAt = now;
    // This read knows every client as of now: earlier answers of lookups say nothing more.
    this.missing.clear();
  }

  get size(): { readonly revocations: number; readonly activeClients: number } {
    return { revocations: this.revoked.size, activeClients: this.activeClients.size };
  }
}

/** How long a lookup's "no such client" (or "disabled") answer holds, and how many ids such answers are kept for. */
const MISSING_TTL_MS = 5_000;
const MAX_MISSING = 10_000;

function key(iss: string, jti: string): string {
  return `${iss}\n${jti}`;
}
