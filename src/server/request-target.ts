// Request target: parses the HTTP request target once at the edge and produces the canonical path used for route matching, authorization, audit and forwarding.
//
// Security matrix: H1-08, H1-10 (request-line target), AZ-03..AZ-07, AZ-10 (path normalization).
// Policy (RFC 9112 §3.2.1 origin-form only; RFC 3986 §6.2.2 normalization applied exactly once):
//   * only origin-form ("/path[?query]") is accepted: absolute-, authority- and asterisk-form are refused;
//   * '#', raw '\' and any character outside RFC 3986 pchar / '/' (path) or query chars (query) are refused;
//   * every '%' must start a two-hex-digit escape; %2F, %5C (encoded separators, Envoy CVE-2021-29492
//     REJECT policy) and %00 in the path are refused;
//   * percent-encoded unreserved characters are decoded, every other escape is kept with upper-case hex
//     (decoding happens once: "%252e" stays "%252e");
//   * runs of '/' are merged, then dot segments are removed (RFC 3986 §5.2.4; '..' above the root stays at
//     the root; a trailing '/' is kept);
//   * a '.' or '..' segment carrying a path parameter (".;x", "..;x", "..%3B") is refused as
//     'invalid-character': Tomcat/Jetty/Spring strip ";params" and would treat it as a dot segment that the
//     gateway did not see (the "/public/..;/admin" authorization bypass class);
//   * the query is validated but returned byte-for-byte and never influences the path (AZ-10).
// The canonical path is a fixed point: canonicalizePath(canonical) returns it unchanged.
// Pure functions, no I/O. Hot path: one charCode scan; when the path needs no work the input string itself
// is returned (no allocation beyond the result object and, with a query, the two slices).

export type TargetRejection =
  | 'not-origin-form' // absolute-form (http://..), authority-form, asterisk-form '*', empty, not starting with '/'
  | 'fragment' // '#' anywhere in the target
  | 'backslash' // raw '\' anywhere
  | 'invalid-character' // outside pchar / '/' (path) or query chars (query); also a dot segment with ';' parameters
  | 'bad-percent-encoding' // '%' not followed by two hex digits
  | 'encoded-separator' // %2F or %5C (any case) in the path
  | 'encoded-nul'; // %00 in the path

export type ParsedTarget =
  | {
      readonly ok: true;
      /** Canonical path: what route matching, authorization, audit and forwarding use. */
      readonly path: string;
      /** Query without the '?', '' if none; validated but byte-for-byte as received. */
      readonly query: string;
      /** Path part exactly as received (for audit only; never route or forward on it). */
      readonly rawPath: string;
    }
  | { readonly ok: false; readonly reason: TargetRejection };

export type CanonicalPath = { ok: true; path: string } | { ok: false; reason: TargetRejection };

const SLASH = 0x2f;
const PERCENT = 0x25;
const DOT = 0x2e;
const SEMI = 0x3b;
const HASH = '#';
const BACKSLASH = '\\';
const QMARK = '?';

// Character classes for ASCII (0..127). Anything >= 128 is invalid everywhere.
const C_PATH = 1; // pchar without '%', plus '/'
const C_QUERY = 2; // C_PATH plus '?'
const C_UNRESERVED = 4; // RFC 3986 unreserved
const CLASS = new Uint8Array(128);
const HEX_VALUE = new Int8Array(128).fill(-1);
const HEX_UPPER = '0123456789ABCDEF';
/** For a decoded byte: the canonical spelling (the character if unreserved, else '%XX' upper-case). */
const CANONICAL_ESCAPE: readonly string[] = buildTables();

function buildTables(): string[] {
  const mark = (chars: string, bits: number): void => {
    for (let i = 0; i < chars.length; i++) {
      const c = chars.charCodeAt(i);
      CLASS[c] = (CLASS[c] ?? 0) | bits;
    }
  };
  const alpha = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  const digit = '0123456789';
  const unreserved = `${alpha}${digit}-._~`;
  const subDelims = "!$&'()*+,;=";
  mark(unreserved, C_UNRESERVED | C_PATH | C_QUERY);
  mark(`${subDelims}:@/`, C_PATH | C_QUERY);
  mark('?', C_QUERY);
  for (let v = 0; v < 16; v++) {
    HEX_VALUE[HEX_UPPER.charCodeAt(v)] = v;
    HEX_VALUE[HEX_UPPER.toLowerCase().charCodeAt(v)] = v;
  }
  const escapes: string[] = [];
  for (let b = 0; b < 256; b++) {
    escapes.push(b < 128 && ((CLASS[b] ?? 0) & C_UNRESERVED) !== 0 ? String.fromCharCode(b) : `%${HEX_UPPER[b >> 4] ?? ''}${HEX_UPPER[b & 15] ?? ''}`);
  }
  return escapes;
}

function hexValue(c: number): number {
  return c < 128 ? (HEX_VALUE[c] ?? -1) : -1;
}

function isUpperHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46);
}

const REJECTED: Readonly<Record<TargetRejection, ParsedTarget>> = Object.freeze({
  'not-origin-form': Object.freeze({ ok: false, reason: 'not-origin-form' }),
  fragment: Object.freeze({ ok: false, reason: 'fragment' }),
  backslash: Object.freeze({ ok: false, reason: 'backslash' }),
  'invalid-character': Object.freeze({ ok: false, reason: 'invalid-character' }),
  'bad-percent-encoding': Object.freeze({ ok: false, reason: 'bad-percent-encoding' }),
  'encoded-separator': Object.freeze({ ok: false, reason: 'encoded-separator' }),
  'encoded-nul': Object.freeze({ ok: false, reason: 'encoded-nul' }),
});

/**
 * Checks shared by the target and a bare path, in this order: origin-form, '#', raw '\'.
 * Returns null when none applies.
 */
function precheck(s: string): TargetRejection | null {
  if (s.length === 0 || s.charCodeAt(0) !== SLASH) return 'not-origin-form';
  if (s.includes(HASH)) return 'fragment';
  if (s.includes(BACKSLASH)) return 'backslash';
  return null;
}

/**
 * Whether the segment s[start, end) forces the slow path: empty (a '//' run) unless it is the final one, or a
 * '.' segment, or a segment starting with '..', '.;' or '.%' (dot segment, dot parameter or encoded dot).
 */
function segmentNeedsWork(s: string, start: number, end: number, final: boolean): boolean {
  const len = end - start;
  if (len === 0) return !final;
  if (s.charCodeAt(start) !== DOT) return false;
  if (len === 1) return true;
  const c = s.charCodeAt(start + 1);
  return c === DOT || c === SEMI || c === PERCENT;
}

/**
 * Validates the path s[0, end) (s[0] is '/'). Returns a rejection (first offending position wins), or
 * whether canonicalization has work to do (escapes to decode or re-case, '//' runs, dot segments).
 */
function scanPath(s: string, end: number): TargetRejection | boolean {
  let work = false;
  let segStart = 1;
  let i = 1;
  while (i < end) {
    const c = s.charCodeAt(i);
    if (c === SLASH) {
      if (!work && segmentNeedsWork(s, segStart, i, false)) work = true;
      i++;
      segStart = i;
    } else if (c === PERCENT) {
      if (i + 2 >= end) return 'bad-percent-encoding';
      const c1 = s.charCodeAt(i + 1);
      const c2 = s.charCodeAt(i + 2);
      const h1 = hexValue(c1);
      const h2 = hexValue(c2);
      if (h1 < 0 || h2 < 0) return 'bad-percent-encoding';
      const b = (h1 << 4) | h2;
      if (b === 0) return 'encoded-nul';
      if (b === 0x2f || b === 0x5c) return 'encoded-separator';
      if (!work && ((b < 128 && ((CLASS[b] ?? 0) & C_UNRESERVED) !== 0) || !isUpperHexDigit(c1) || !isUpperHexDigit(c2))) {
        work = true;
      }
      i += 3;
    } else {
      if (c >= 128 || ((CLASS[c] ?? 0) & C_PATH) === 0) return 'invalid-character';
      i++;
    }
  }
  if (!work && segmentNeedsWork(s, segStart, end, true)) work = true;
  return work;
}

/** Validates the query s[start, end). Returns a rejection or null. */
function scanQuery(s: string, start: number, end: number): TargetRejection | null {
  let i = start;
  while (i < end) {
    const c = s.charCodeAt(i);
    if (c === PERCENT) {
      if (i + 2 >= end || hexValue(s.charCodeAt(i + 1)) < 0 || hexValue(s.charCodeAt(i + 2)) < 0) {
        return 'bad-percent-encoding';
      }
      i += 3;
    } else {
      if (c >= 128 || ((CLASS[c] ?? 0) & C_QUERY) === 0) return 'invalid-character';
      i++;
    }
  }
  return null;
}

/** A '.' or '..' segment followed by a path parameter: ".;x", "..;x", ".%3Bx", "..%3Bx" (escapes already canonical). */
function isDotParameter(seg: string): boolean {
  if (seg.charCodeAt(0) !== DOT) return false;
  const k = seg.charCodeAt(1) === DOT ? 2 : 1;
  const c = seg.charCodeAt(k);
  return c === SEMI || (c === PERCENT && seg.charCodeAt(k + 1) === 0x33 && seg.charCodeAt(k + 2) === 0x42);
}

/**
 * Slow path on an already validated path s[0, end): decode unreserved escapes and upper-case the others
 * (one pass, so decoding happens once), merge '/' runs, remove dot segments. Returns null for a dot
 * parameter segment.
 */
function rebuild(s: string, end: number): string | null {
  const segs: string[] = [];
  let seg = '';
  let run = 1; // start of the not-yet-copied literal run in the current segment
  let i = 1;
  for (;;) {
    const atEnd = i >= end;
    const c = atEnd ? SLASH : s.charCodeAt(i);
    if (c === SLASH) {
      if (run < i) seg += s.slice(run, i);
      if (seg === '..') {
        segs.pop();
      } else if (seg !== '' && seg !== '.') {
        if (isDotParameter(seg)) return null;
        segs.push(seg);
      }
      if (atEnd) {
        if (segs.length === 0) return '/';
        const joined = `/${segs.join('/')}`;
        // The final segment was '', '.' or '..': the result keeps a trailing '/' (RFC 3986 §5.2.4).
        return seg === '' || seg === '.' || seg === '..' ? `${joined}/` : joined;
      }
      seg = '';
      i++;
      run = i;
    } else if (c === PERCENT) {
      if (run < i) seg += s.slice(run, i);
      const b = (hexValue(s.charCodeAt(i + 1)) << 4) | hexValue(s.charCodeAt(i + 2));
      seg += CANONICAL_ESCAPE[b] ?? '';
      i += 3;
      run = i;
    } else {
      i++;
    }
  }
}

/** Canonical form of the validated path s[0, end), or null (dot parameter). */
function canonicalOf(s: string, end: number, work: boolean): string | null {
  if (!work) return end === s.length ? s : s.slice(0, end);
  return rebuild(s, end);
}

/**
 * Parses an HTTP/1.1 request-target (or an HTTP/2 :path) once. Only origin-form is accepted. On success
 * `path` is the canonical path, `query` the raw query (without '?'), `rawPath` the path as received.
 * Never throws.
 */
export function parseRequestTarget(target: string): ParsedTarget {
  if (typeof target !== 'string') return REJECTED['not-origin-form'];
  const pre = precheck(target);
  if (pre !== null) return REJECTED[pre];
  const q = target.indexOf(QMARK);
  const pathEnd = q === -1 ? target.length : q;
  const scanned = scanPath(target, pathEnd);
  if (typeof scanned === 'string') return REJECTED[scanned];
  if (q !== -1) {
    const bad = scanQuery(target, q + 1, target.length);
    if (bad !== null) return REJECTED[bad];
  }
  const path = canonicalOf(target, pathEnd, scanned);
  if (path === null) return REJECTED['invalid-character'];
  return {
    ok: true,
    path,
    query: q === -1 ? '' : target.slice(q + 1),
    rawPath: q === -1 ? target : target.slice(0, q),
  };
}

/**
 * Canonicalizes a bare path (no query: '?' is an invalid character here) with the same rules as
 * parseRequestTarget. Idempotent. Never throws.
 */
export function canonicalizePath(rawPath: string): CanonicalPath {
  if (typeof rawPath !== 'string') return { ok: false, reason: 'not-origin-form' };
  const pre = precheck(rawPath);
  if (pre !== null) return { ok: false, reason: pre };
  const scanned = scanPath(rawPath, rawPath.length);
  if (typeof scanned === 'string') return { ok: false, reason: scanned };
  const path = canonicalOf(rawPath, rawPath.length, scanned);
  if (path === null) return { ok: false, reason: 'invalid-character' };
  return { ok: true, path };
}
