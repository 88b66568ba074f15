// The audit chain's encoding, shared by the writer and the verifier: every record is one JSON line whose last member is
// `"hash"`, the SHA-256 of the line's own bytes without that member; each record's `prev` is the hash of the record before
// it. The verifier recomputes the hash over the bytes as they are on disk, so no canonicalization can differ between them.
import { createHash, hash as oneShotHash } from 'node:crypto';

/** The `prev` of a chain's first record. */
export const GENESIS = '0'.repeat(64);

const HASH_MEMBER = ',"hash":"';
/** `,"hash":"` + 64 hex digits + `"}`. */
const HASH_SUFFIX_LENGTH = HASH_MEMBER.length + 64 + 2;
const HEX64 = /^[0-9a-f]{64}$/;

/** What every chained record starts with; the kinds add their own members between these and `prev`. */
export interface ChainFields {
  readonly seq: number;
  /** UTC, millisecond precision. Order is given by seq, never by this clock (LOG-09). */
  readonly ts: string;
  readonly type: string;
  /** The chain: one per gateway instance writing into the directory. */
  readonly instance: string;
  /** Identifies the process run that wrote the record; a restart starts a new segment under a new boot id (LOG-06). */
  readonly boot_id: string;
}

export interface ChainLinks {
  readonly prev: string;
  readonly hash: string;
}

/**
 * Seals a record: `unsealed` is its JSON without `hash` (an object ending in `"prev":"…"}`). Returns the line (with its
 * newline) and the hash the next record links to.
 */
export function seal(unsealed: string): { readonly line: string; readonly hash: string } {
  // The one-shot hash (Node 20.12+) skips the Hash object of createHash: this runs once per record, on the hot path.
  const hash = oneShotHash('sha256', unsealed, 'hex');
  return { line: `${unsealed.slice(0, -1)}${HASH_MEMBER}${hash}"}\n`, hash };
}

export type Opened =
  | { readonly ok: true; readonly record: ChainFields & ChainLinks & Record<string, unknown>; readonly hash: string }
  | { readonly ok: false; readonly problem: 'unparsable' | 'hash mismatch' };

/** Checks one line (without its newline) as the writer sealed it: its hash over its own bytes, and its chain fields. */
export function open(line: string): Opened {
  if (line.length <= HASH_SUFFIX_LENGTH || !line.endsWith('"}')) return { ok: false, problem: 'unparsable' };
  const cut = line.length - HASH_SUFFIX_LENGTH;
  if (line.slice(cut, cut + HASH_MEMBER.length) !== HASH_MEMBER) return { ok: false, problem: 'unparsable' };
  const stored = line.slice(cut + HASH_MEMBER.length, line.length - 2);
  if (!HEX64.test(stored)) return { ok: false, problem: 'unparsable' };
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return { ok: false, problem: 'unparsable' };
  }
  if (!isChainRecord(parsed)) return { ok: false, problem: 'unparsable' };
  const recomputed = createHash('sha256')
    .update(`${line.slice(0, cut)}}`)
    .digest('hex');
  if (recomputed !== stored || parsed.hash !== stored) return { ok: false, problem: 'hash mismatch' };
  return { ok: true, record: parsed, hash: stored };
}

function isChainRecord(value: unknown): value is ChainFields & ChainLinks & Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const r = value as Record<string, unknown>;
  return (
    Number.isSafeInteger(r['seq']) &&
    (r['seq'] as number) > 0 &&
    typeof r['ts'] === 'string' &&
    typeof r['type'] === 'string' &&
    typeof r['instance'] === 'string' &&
    typeof r['boot_id'] === 'string' &&
    typeof r['prev'] === 'string' &&
    HEX64.test(r['prev']) &&
    typeof r['hash'] === 'string'
  );
}

/** The chain of changes made with the CLI: a name no gateway instance can have (instances start with a letter or digit). */
export const ADMIN_CHAIN = '_admin';
const SEGMENT_NAME = /^(_admin|[A-Za-z0-9][A-Za-z0-9_-]{0,63})\.(\d{12})\.jsonl$/;

/** `<instance>.<first seq, 12 digits>.jsonl`: names sort in chain order. */
export function segmentName(instance: string, firstSeq: number): string {
  return `${instance}.${String(firstSeq).padStart(12, '0')}.jsonl`;
}

export function parseSegmentName(name: string): { readonly instance: string; readonly firstSeq: number } | undefined {
  const match = SEGMENT_NAME.exec(name);
  if (match === null) return undefined;
  return { instance: match[1] as string, firstSeq: Number(match[2]) };
}

/** The segment files of every chain in a directory listing, each chain's in order. */
export function chainsIn(names: readonly string[]): Map<string, string[]> {
  const chains = new Map<string, string[]>();
  for (const name of [...names].sort()) {
    const parsed = parseSegmentName(name);
    if (parsed === undefined) continue;
    const list = chains.get(parsed.instance);
    if (list === undefined) chains.set(parsed.instance, [name]);
    else list.push(name);
  }
  return chains;
}

/** A hostname as an instance id: characters a file name can carry, at most 64. */
export function defaultInstanceId(hostname: string): string {
  const cleaned = hostname
    .replace(/[^A-Za-z0-9_-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 64);
  return cleaned === '' ? 'gatehouse' : cleaned;
}
