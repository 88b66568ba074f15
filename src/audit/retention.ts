// Audit retention: which closed segments of a chain the policy lets go (by the age of their records, or while the chain is
// over its size), and where the chain then continues. The log names them in a signed `segments_pruned` record and deletes
// them once that record is in the file; this module only decides.
import { join } from 'node:path';
import type { Logger } from 'pino';
import { firstRecord, statOrUndefined } from './segments.js';

export interface RetentionPolicy {
  readonly maxAgeMs?: number | undefined;
  readonly maxBytes?: number | undefined;
  /** How often the policy is applied (default a minute). */
  readonly checkMs?: number;
}

/** audit.retention of the configuration, as the log takes it. */
export function retentionOf(settings: { readonly max_age_days?: number | undefined; readonly max_total_bytes?: number | undefined }): RetentionPolicy {
  return { maxAgeMs: settings.max_age_days === undefined ? undefined : settings.max_age_days * 86_400_000, maxBytes: settings.max_total_bytes };
}

export interface PrunePlan {
  /** The oldest segments of the chain, in order. */
  readonly segments: readonly string[];
  /** The last record they hold: the next segment's first record links to it. */
  readonly through: { readonly seq: number; readonly hash: string };
  readonly bytes: number;
  readonly reason: 'age' | 'size';
}

/**
 * The oldest segments of a chain (`names`, oldest first) the policy removes at `now`; undefined when none. `open` names the
 * segments in use (never pruned, nor anything after them). A segment whose successor does not begin with a verifiable
 * record stops the pruning there: verify would have nothing to link the rest of the chain to.
 */
export function planPruning(
  dir: string,
  names: readonly string[],
  open: readonly string[],
  policy: RetentionPolicy,
  now: number,
  log: Logger,
): PrunePlan | undefined {
  const sizes = names.map((name) => statOrUndefined(join(dir, name))?.size ?? 0);
  let total = sizes.reduce((sum, size) => sum + size, 0);
  const cutoff = now - (policy.maxAgeMs ?? Number.POSITIVE_INFINITY);
  let through: PrunePlan['through'] | undefined;
  let count = 0;
  let reason: PrunePlan['reason'] = 'age';
  for (let i = 0; i + 1 < names.length; i++) {
    const name = names[i] as string;
    if (open.includes(name)) break;
    const next = firstRecord(join(dir, names[i + 1] as string));
    if (next === undefined) {
      log.warn({ segment: names[i + 1] }, 'audit retention stops: this segment does not begin with a verifiable record');
      break;
    }
    const old = Date.parse(next.ts) < cutoff;
    const large = policy.maxBytes !== undefined && total > policy.maxBytes;
    if (!old && !large) break;
    reason = old ? 'age' : 'size';
    total -= sizes[i] as number;
    through = { seq: next.seq - 1, hash: next.prev };
    count = i + 1;
  }
  if (through === undefined) return undefined;
  return { segments: names.slice(0, count), through, bytes: sizes.slice(0, count).reduce((sum, size) => sum + size, 0), reason };
}
