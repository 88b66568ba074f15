// The record of administrative changes made with the CLI (clients, signing keys): a chain of its own in the audit
// directory (`_admin.<seq>.jsonl`, a name no gateway instance can take), written like every chain — hashed, linked,
// covered by a checkpoint signed with the audit key, exported with the others — and verified and queried with them. Each
// command appends its changes in a segment of its own and waits until they are on disk before it reports success, so
// "who disabled this client, when, and what did it change" has an answer nobody can quietly rewrite. Never a secret, a
// hash or key material.
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { CheckpointSigner } from './audit-key.js';
import { ADMIN_CHAIN } from './chain.js';
import type { CheckpointExport } from './export.js';
import { AuditLogError, type AdminActor, type AdminChange, type CommandActor } from './event.js';
import { AuditLog, type AuditLogOptions } from './log.js';

export function adminActor(osUser: string, uid: number, sudoUser: string | undefined): CommandActor {
  return { os_user: osUser, uid, sudo_user: sudoUser ?? null, host: hostname(), pid: process.pid };
}

export interface AdminChainOptions {
  readonly dir: string;
  readonly signer: CheckpointSigner;
  /** The configured exports: the command's checkpoint goes where a gateway's go. */
  readonly exportTo?: CheckpointExport | undefined;
  /** audit.retention, applied to the admin chain as each gateway applies it to its own. */
  readonly retention?: AuditLogOptions['retention'];
  readonly log: Logger;
  /** How long a command waits for another command that is writing the chain (default 10 s). */
  readonly lockWaitMs?: number;
}

const LOCK_RETRY_MS = 50;

/**
 * Appends the changes of one command to the admin chain and returns once they, and the checkpoint covering them, are on
 * disk (fsync). Throws AuditLogError or AuditUnavailableError when they could not be recorded.
 */
export async function recordAdminChanges(options: AdminChainOptions, actor: AdminActor, changes: readonly AdminChange[]): Promise<void> {
  const log = await openAdminChain(options);
  try {
    for (const change of changes) log.admin({ action: change.action, target: change.target, actor, changes: change.changes });
    await log.flush();
    await log.pruneIfDue();
  } finally {
    await log.close();
  }
}

async function openAdminChain(options: AdminChainOptions): Promise<AuditLog> {
  const deadline = Date.now() + (options.lockWaitMs ?? 10_000);
  for (;;) {
    try {
      return new AuditLog({
        dir: options.dir,
        instance: ADMIN_CHAIN,
        fsync: 'always',
        fsyncIntervalMs: 1000,
        onFailure: 'fail-closed',
        segmentMaxBytes: 64 * 1024 * 1024,
        segmentMaxAgeMs: 86_400_000,
        maxBufferedBytes: 1024 * 1024,
        ...(options.retention !== undefined ? { retention: options.retention } : {}),
        log: options.log,
        // One checkpoint, at close, covers the command's records.
        checkpoints: {
          signer: options.signer,
          everyRecords: Number.MAX_SAFE_INTEGER,
          intervalMs: 86_400_000,
          ...(options.exportTo !== undefined ? { exportTo: options.exportTo } : {}),
        },
      });
    } catch (error) {
      // Commands run by two operators at once take turns.
      if (!(error instanceof AuditLogError && error.busy) || Date.now() >= deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS));
    }
  }
}
