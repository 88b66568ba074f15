// One writer per audit chain: a lock file beside its segments (`<instance>.lock`) naming the process that writes it.
import { linkSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AuditLogError } from './event.js';

/**
 * The chain locks this process holds. Process-wide by nature (a lock file names a process): it tells this process's own
 * live lock from a stale one left by an earlier process that had the same pid.
 */
const HELD_LOCKS = new Set<string>();

export class ChainLock {
  readonly file: string;

  /** Takes the lock of `instance`'s chain in `dir`, or throws AuditLogError (busy: another live process holds it). */
  constructor(
    private readonly dir: string,
    private readonly instance: string,
    private readonly bootId: string,
  ) {
    this.file = join(dir, `${instance}.lock`);
    this.acquire();
  }

  /**
   * One writer per chain. The lock file appears with its content at once (written aside, then hard-linked: a reader
   * never sees it empty). A lock naming a live process is respected — this one only while one of its own logs holds it
   * (in a container every restart may be pid 1). A stale lock is taken over by renaming exactly it aside first, so two
   * processes taking over at once cannot both win.
   */
  private acquire(): void {
    const mine = join(this.dir, `${this.instance}.lock.${process.pid}.${this.bootId}`);
    writeFileSync(mine, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          linkSync(mine, this.file);
          HELD_LOCKS.add(this.file);
          return;
        } catch (error) {
          if (!(error instanceof Error && 'code' in error && error.code === 'EEXIST')) throw error;
        }
        const content = readOrEmpty(this.file);
        const holder = Number(content.trim());
        const held = holder === process.pid ? HELD_LOCKS.has(this.file) : Number.isSafeInteger(holder) && holder > 0 && isAlive(holder);
        if (held) {
          throw new AuditLogError(
            `audit chain "${this.instance}" in ${this.dir} is being written by process ${holder}; give each gateway its own audit.instance`,
            true,
          );
        }
        // Left by a process that is gone (a crash, kill -9): moved aside, if it is still the lock that was read.
        const aside = `${mine}.stale`;
        try {
          renameSync(this.file, aside);
        } catch {
          continue;
        }
        if (readOrEmpty(aside) !== content) {
          // Someone else's fresh lock was moved: put back (unless yet another took its place), and look again.
          try {
            linkSync(aside, this.file);
          } catch {
            // The place is taken: the next attempt reads whoever holds it.
          }
        }
        unlinkSync(aside);
      }
      throw new AuditLogError(`audit chain "${this.instance}" in ${this.dir}: could not take its lock (${this.file}); another process keeps changing it`);
    } finally {
      unlinkSync(mine);
    }
  }

  /** Releases the lock (a lock file already gone is fine). */
  release(): void {
    HELD_LOCKS.delete(this.file);
    try {
      unlinkSync(this.file);
    } catch {
      // Already gone.
    }
  }
}

function readOrEmpty(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error instanceof Error && 'code' in error && error.code === 'EPERM';
  }
}
