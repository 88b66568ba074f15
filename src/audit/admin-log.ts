// The record of administrative changes made with the CLI (clients, signing keys): one JSON line per change appended to
// <audit dir>/admin.jsonl (file 0600, directory 0700), flushed to disk before the command reports success, so "who
// disabled this client, when, and what did it change" has an answer. Never a secret, a hash or key material.
import { closeSync, fstatSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { makeDirectory } from '../lib/make-directory.js';

export type AdminAction =
  | 'client.add'
  | 'client.update'
  | 'client.disable'
  | 'client.enable'
  | 'client.rotate_secret'
  | 'client.remove'
  | 'key.rotate'
  | 'key.revoke';

/** Who ran the command: the operating-system account (and the account behind sudo, when there is one). */
export interface AdminActor {
  readonly os_user: string;
  readonly uid: number;
  readonly sudo_user: string | null;
  readonly host: string;
  readonly pid: number;
}

export interface AdminChange {
  readonly action: AdminAction;
  /** The client id or signing key id acted on. */
  readonly target: string;
  /** Field → { from, to }, or facts about the change (never secrets). */
  readonly changes: Readonly<Record<string, unknown>>;
}

export const ADMIN_LOG_FILE = 'admin.jsonl';

export function adminActor(osUser: string, uid: number, sudoUser: string | undefined): AdminActor {
  return { os_user: osUser, uid, sudo_user: sudoUser ?? null, host: hostname(), pid: process.pid };
}

/**
 * Appends one record and fsyncs it. Synchronous: a CLI command makes one change and exits, and the record must be on disk
 * before the command says the change was made. O_APPEND keeps concurrent commands' lines whole (one write each).
 */
export function appendAdminRecord(dir: string, actor: AdminActor, change: AdminChange, now: number = Date.now()): string {
  makeDirectory(dir, 0o700);
  const file = join(dir, ADMIN_LOG_FILE);
  const line = `${JSON.stringify({ ts: new Date(now).toISOString(), event: 'admin', action: change.action, target: change.target, actor, changes: change.changes })}\n`;
  const fd = openSync(file, 'a', 0o600);
  try {
    if (!fstatSync(fd).isFile()) throw new Error(`${file} is not a regular file`);
    writeSync(fd, line);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return file;
}
