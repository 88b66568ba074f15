// What the bearer path must know on every request, in memory: revoked token ids and which clients may still use their
// tokens. Both are written through the store first (so other instances and restarts see them) and refreshed from it, so a
// revocation or a `clients disable` made by another process takes effect within one refresh interval.
import type { RevocationList } from '../authn/bearer.js';
import type { Client, CredentialStore, Revocation } from '../store/contract.js';

export class RevocationSet implements RevocationList {
  /** `iss \n jti` → epoch ms after which the revocation is moot (the token expired). */
  private revoked = new Map<string, number>();
  /** Clients that exist and are enabled; tokens of any other client_id are refused. */
  private activeClients = new Set<string>();
  /** Clients that authenticated since the last refresh began, with when: a refresh that read the store earlier keeps them. */
  private seenSince = new Map<string, number>();

  constructor(
    private readonly store: CredentialStore,
    private readonly now: () => number = Date.now,
  ) {}

  isRevoked(iss: string, jti: string): boolean {
    const until = this.revoked.get(key(iss, jti));
    return until !== undefined && until > this.now();
  }

  isClientActive(clientId: string): boolean {
    return this.activeClients.has(clientId);
  }

  /** Stores the revocation first: once this resolves, this instance refuses the token and a restart still does. */
  async revoke(revocation: Revocation): Promise<void> {
    await this.store.revoke(revocation);
    this.revoked.set(key(revocation.iss, revocation.jti), revocation.expiresAt);
  }

  /** A client that just authenticated exists and is enabled (it may be newer than the last refresh). */
  clientSeen(client: Client): void {
    if (!client.enabled) return;
    this.activeClients.add(client.id);
    this.seenSince.set(client.id, this.now());
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
    const active = new Set(clients.filter((client) => client.enabled).map((client) => client.id));
    const seenSince = new Map<string, number>();
    for (const [id, at] of this.seenSince) {
      if (at < now) continue;
      active.add(id);
      seenSince.set(id, at);
    }
    this.activeClients = active;
    this.seenSince = seenSince;
  }

  get size(): { readonly revocations: number; readonly activeClients: number } {
    return { revocations: this.revoked.size, activeClients: this.activeClients.size };
  }
}

function key(iss: string, jti: string): string {
  return `${iss}\n${jti}`;
}
