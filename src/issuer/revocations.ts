// What the bearer path must know on every request, in memory: revoked token ids and which clients may still use their
// tokens (enabled ones, for tokens issued since their last disable). Both are written through the store first (so other instances and restarts see them) and refreshed from it, so a
// revocation or a `clients disable` made by another process takes effect within one refresh interval.
import type { RevocationList } from '../authn/bearer.js';
import type { Client, CredentialStore, Revocation } from '../store/contract.js';

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

  constructor(
    private readonly store: CredentialStore,
    private readonly now: () => number = Date.now,
  ) {}

  isRevoked(iss: string, jti: string): boolean {
    const until = this.revoked.get(key(iss, jti));
    return until !== undefined && until > this.now();
  }

  acceptsClientToken(clientId: string, issuedAtS: number): boolean {
    const notBefore = this.activeClients.get(clientId);
    return notBefore !== undefined && issuedAtS >= notBefore;
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
    const [revocations, clients] = await Promise.all([this.store.listRevocations(now), this.store.listClients()]);
    const revoked = new Map<string, number>();
    for (const revocation of revocations) revoked.set(key(revocation.iss, revocation.jti), revocation.expiresAt);
    // A revocation made here while the read was in flight must not be lost by the swap.
    for (const [id, until] of this.revoked) if (until > now && !revoked.has(id)) revoked.set(id, until);
    this.revoked = revoked;
    const active = new Map<string, number>();
    for (const client of clients) if (client.enabled) active.set(client.id, client.tokensNotBeforeS ?? 0);
    const seenSince = new Map<string, { readonly readAt: number; readonly notBeforeS: number }>();
    for (const [id, seen] of this.seenSince) {
      // Read before this refresh's read began: this refresh knows better (the client may be disabled now).
      if (seen.readAt < now) continue;
      active.set(id, Math.max(seen.notBeforeS, active.get(id) ?? 0));
      seenSince.set(id, seen);
    }
    this.activeClients = active;
    this.seenSince = seenSince;
    this.snapshotAt = now;
  }

  get size(): { readonly revocations: number; readonly activeClients: number } {
    return { revocations: this.revoked.size, activeClients: this.activeClients.size };
  }
}

function key(iss: string, jti: string): string {
  return `${iss}\n${jti}`;
}
