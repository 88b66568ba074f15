// The segment files of a chain as the writer meets them: its newest complete record at start (where a restart links to),
// the first record of a segment (for retention), and sealing a closed segment read-only.
import { chmodSync, closeSync, fstatSync, openSync, readdirSync, readSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { chainsIn, open as openLine } from './chain.js';
import { AuditLogError } from './event.js';

/** How much of a segment's end is read to find its last complete record at start. */
const TAIL_BYTES = 64 * 1024;

/** Where the chain stood when the previous process left it. */
export interface PreviousHead {
  readonly seq: number;
  readonly hash: string;
  readonly segment: string;
  readonly bootId: string;
  /** Bytes after the last complete record (a write torn by a crash). */
  readonly tornBytes: number;
  /** The last record is a checkpoint: nothing of the previous run waits for a signature. */
  readonly signed: boolean;
}

/**
 * The last complete record of this instance's chain, from the end of its newest segment; older segments are made
 * read-only on the way (a crash leaves the last one writable).
 */
export function lastCompleteRecord(dir: string, instance: string, log: Logger): PreviousHead | undefined {
  const names = chainsIn(readdirSync(dir)).get(instance) ?? [];
  for (const name of names) sealSegment(dir, name);
  let carriedTorn = 0;
  for (let i = names.length - 1; i >= 0; i--) {
    const name = names[i] as string;
    const tail = readTail(join(dir, name));
    // Complete lines only: whatever follows the last newline is a write torn by a crash.
    let end = tail.lastIndexOf('\n');
    if (end === -1 && i === names.length - 1) {
      // The newest segment holds no complete record (a crash right after it was created): it would take the name the
      // next segment needs. Empty, it goes; with torn bytes, it is kept aside under a name no chain reads.
      carriedTorn = Buffer.byteLength(tail);
      if (carriedTorn === 0) unlinkSync(join(dir, name));
      else renameSync(join(dir, name), join(dir, `${name}.torn`));
      log.warn({ segment: name, torn_bytes: carriedTorn }, 'the newest audit segment held no complete record; set aside');
      continue;
    }
    const tornBytes = Buffer.byteLength(tail.slice(end + 1)) + carriedTorn;
    let skipped = 0;
    while (end > 0) {
      const start = tail.lastIndexOf('\n', end - 1) + 1;
      const opened = openLine(tail.slice(start, end));
      if (opened.ok) {
        if (skipped > 0)
          log.error(
            { segment: name, skipped },
            'the last audit records do not verify (tampering?); the chain goes on from the last one that does: run gatehouse audit verify',
          );
        return {
          seq: opened.record.seq,
          hash: opened.hash,
          segment: name,
          bootId: opened.record.boot_id,
          tornBytes,
          signed: opened.record.type === 'checkpoint',
        };
      }
      // A line cut by the tail window's start is not evidence of anything; only whole lines count as skipped.
      if (start === 0 && tail.length === TAIL_BYTES) break;
      skipped++;
      end = start - 1;
    }
    if (end > 0 || skipped > 0 || tail.length === TAIL_BYTES) {
      throw new AuditLogError(`audit segment ${name} has no verifiable record near its end; run gatehouse audit verify before starting`);
    }
  }
  return undefined;
}

/** A closed segment is read-only (LOG-10): the writer itself cannot rewrite it by accident. */
export function sealSegment(dir: string, name: string): void {
  try {
    chmodSync(join(dir, name), 0o400);
  } catch {
    // Moved or deleted already: the next batch's check reports that.
  }
}

export function statOrUndefined(path: string): { readonly ino: number; readonly size: number } | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

/** The first record of a segment, when it verifies on its own (its first 4 KiB). */
export function firstRecord(path: string): { readonly seq: number; readonly ts: string; readonly prev: string } | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const buffer = Buffer.alloc(4096);
    const text = buffer.subarray(0, readSync(fd, buffer, 0, buffer.length, 0)).toString('utf8');
    const end = text.indexOf('\n');
    const opened = end === -1 ? undefined : openLine(text.slice(0, end));
    return opened?.ok === true ? { seq: opened.record.seq, ts: opened.record.ts, prev: opened.record.prev } : undefined;
  } finally {
    closeSync(fd);
  }
}

function readTail(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const length = Math.min(size, TAIL_BYTES);
    const buffer = Buffer.alloc(length);
    readSync(fd, buffer, 0, length, size - length);
    return buffer.toString('utf8');
  } finally {
    closeSync(fd);
  }
}
