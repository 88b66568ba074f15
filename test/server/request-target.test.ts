// Tests for the request-target parser / path canonicalizer (security matrix H1-08, H1-10, AZ-03..AZ-07, AZ-10).
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { canonicalizePath, parseRequestTarget, type ParsedTarget, type TargetRejection } from '../../src/server/request-target.js';

type Accept = { readonly id: string; readonly target: string; readonly path: string; readonly query?: string };
type Reject = { readonly id: string; readonly target: string; readonly reason: TargetRejection };

const ACCEPTED: readonly Accept[] = [
  // AZ-03: dot segments (literal and encoded) are removed before authz; that path is what is forwarded.
  { id: 'AZ-03', target: '/public/../admin', path: '/admin' },
  { id: 'AZ-03', target: '/%2e%2e/admin', path: '/admin' },
  { id: 'AZ-03', target: '/%2E%2e/admin', path: '/admin' },
  { id: 'AZ-03', target: '/public/.%2e/admin', path: '/admin' },
  { id: 'AZ-03', target: '/public/%2e./admin', path: '/admin' },
  { id: 'AZ-03', target: '/./admin', path: '/admin' },
  { id: 'AZ-03', target: '/%2e/admin', path: '/admin' },
  { id: 'AZ-03', target: '//admin///x', path: '/admin/x' },
  { id: 'AZ-03', target: '//evil.example/x', path: '/evil.example/x' },
  { id: 'AZ-03', target: '/../a', path: '/a' },
  { id: 'AZ-03', target: '/../../../../etc/passwd', path: '/etc/passwd' },
  { id: 'AZ-03', target: '/a/b/../../..', path: '/' },
  { id: 'AZ-03', target: '/a/b/c/./../../g', path: '/a/g' },
  { id: 'AZ-03', target: '/a/', path: '/a/' },
  { id: 'AZ-03', target: '/a/.', path: '/a/' },
  { id: 'AZ-03', target: '/a/..', path: '/' },
  { id: 'AZ-03', target: '/a/b/..', path: '/a/' },
  { id: 'AZ-03', target: '/a//', path: '/a/' },
  { id: 'AZ-03', target: '/', path: '/' },
  { id: 'AZ-03', target: '//', path: '/' },
  { id: 'AZ-03', target: '/.', path: '/' },
  { id: 'AZ-03', target: '/..', path: '/' },
  { id: 'AZ-03', target: '/public/..%2e/admin', path: '/public/.../admin' }, // '...' is not a dot segment
  { id: 'AZ-03', target: '/.well-known/jwks.json', path: '/.well-known/jwks.json' },
  { id: 'AZ-03', target: '/a/.b/..c/c../...', path: '/a/.b/..c/c../...' },
  // AZ-05: decode exactly once; a decoded '%' stays encoded and is never decoded again.
  { id: 'AZ-05', target: '/%252e%252e', path: '/%252e%252e' },
  { id: 'AZ-05', target: '/%252e%252e/admin', path: '/%252e%252e/admin' },
  { id: 'AZ-05', target: '/public/%252e%252e/admin', path: '/public/%252e%252e/admin' },
  { id: 'AZ-05', target: '/%25252f', path: '/%25252f' },
  { id: 'AZ-05', target: '/%252F', path: '/%252F' },
  { id: 'AZ-05', target: '/%25%32%65', path: '/%252e' }, // %32 → '2', %65 → 'e', but the result is literal text
  // AZ-06: encoded unreserved characters are decoded; other escapes keep upper-case hex.
  { id: 'AZ-06', target: '/%61dmin', path: '/admin' },
  { id: 'AZ-06', target: '/%41%44%4d%49%4E', path: '/ADMIN' },
  { id: 'AZ-06', target: '/%7e%7Euser/%2d%5f%30', path: '/~~user/-_0' },
  { id: 'AZ-06', target: '/a%3ab', path: '/a%3Ab' },
  { id: 'AZ-06', target: '/a%20b%c3%a9', path: '/a%20b%C3%A9' },
  { id: 'AZ-06', target: "/a:b@c!$&'()*+,;=~-._", path: "/a:b@c!$&'()*+,;=~-._" },
  // AZ-10: the query never influences the path and is returned byte-for-byte.
  { id: 'AZ-10', target: '/public?x=/../admin', path: '/public', query: 'x=/../admin' },
  { id: 'AZ-10', target: '/public?/admin', path: '/public', query: '/admin' },
  { id: 'AZ-10', target: '/public/?%2e%2e%2F%5c%00%61', path: '/public/', query: '%2e%2e%2F%5c%00%61' },
  { id: 'AZ-10', target: '/p?a=1?b=2&c', path: '/p', query: 'a=1?b=2&c' },
  { id: 'AZ-10', target: '/p?', path: '/p', query: '' },
  { id: 'AZ-10', target: '/a/../b?q=%7e', path: '/b', query: 'q=%7e' },
];

const REJECTED: readonly Reject[] = [
  // H1-08: '#', '\', '*', raw non-ASCII and other invalid characters in the request target.
  { id: 'H1-08', target: '*', reason: 'not-origin-form' },
  { id: 'H1-08', target: '', reason: 'not-origin-form' },
  { id: 'H1-08', target: 'admin', reason: 'not-origin-form' },
  { id: 'H1-08', target: '?x=1', reason: 'not-origin-form' },
  { id: 'H1-08', target: '/a#b', reason: 'fragment' },
  { id: 'H1-08', target: '/a?b#c', reason: 'fragment' },
  { id: 'H1-08', target: '/#', reason: 'fragment' },
  { id: 'H1-08', target: '/a\\b', reason: 'backslash' },
  { id: 'H1-08', target: '/a?b=\\', reason: 'backslash' },
  { id: 'H1-08', target: '/a b', reason: 'invalid-character' },
  { id: 'H1-08', target: '/caf\u00e9', reason: 'invalid-character' },
  { id: 'H1-08', target: '/\u{1F600}', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a\u0000b', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a\tb', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a\r\nX-Injected: 1', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a\u007f', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a"b', reason: 'invalid-character' },
  { id: 'H1-08', target: '/<script>', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a^b', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a`b', reason: 'invalid-character' },
  { id: 'H1-08', target: '/{a}', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a|b', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a[0]', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a?b c', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a?b=caf\u00e9', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a?b={}', reason: 'invalid-character' },
  { id: 'H1-08', target: '/a%zz', reason: 'bad-percent-encoding' },
  { id: 'H1-08', target: '/a%2', reason: 'bad-percent-encoding' },
  { id: 'H1-08', target: '/a%', reason: 'bad-percent-encoding' },
  { id: 'H1-08', target: '/a%2?x', reason: 'bad-percent-encoding' },
  { id: 'H1-08', target: '/a%%41', reason: 'bad-percent-encoding' },
  { id: 'H1-08', target: '/a?b=%', reason: 'bad-percent-encoding' },
  { id: 'H1-08', target: '/a?b=%g0', reason: 'bad-percent-encoding' },
  { id: 'H1-08', target: '/a%00b', reason: 'encoded-nul' },
  // H1-10: absolute-form and authority-form are refused (the gateway is not a forward proxy).
  { id: 'H1-10', target: 'http://evil.example/admin', reason: 'not-origin-form' },
  { id: 'H1-10', target: 'https://evil.example/admin', reason: 'not-origin-form' },
  { id: 'H1-10', target: 'HTTP://evil.example', reason: 'not-origin-form' },
  { id: 'H1-10', target: 'example.com:443', reason: 'not-origin-form' },
  { id: 'H1-10', target: ' /admin', reason: 'not-origin-form' },
  // AZ-04: encoded separators are refused (Envoy CVE-2021-29492 REJECT_REQUEST).
  { id: 'AZ-04', target: '/public/..%2fadmin', reason: 'encoded-separator' },
  { id: 'AZ-04', target: '/public/..%2Fadmin', reason: 'encoded-separator' },
  { id: 'AZ-04', target: '/%2F', reason: 'encoded-separator' },
  { id: 'AZ-04', target: '/a%2fb', reason: 'encoded-separator' },
  { id: 'AZ-04', target: '/%5c', reason: 'encoded-separator' },
  { id: 'AZ-04', target: '/public/..%5Cadmin', reason: 'encoded-separator' },
  // AZ-03 (same principle): a dot segment carrying ';' parameters is what Tomcat/Jetty/Spring see as '..'.
  { id: 'AZ-03', target: '/public/..;/admin', reason: 'invalid-character' },
  { id: 'AZ-03', target: '/public/..;jsessionid=x/admin', reason: 'invalid-character' },
  { id: 'AZ-03', target: '/public/.;/admin', reason: 'invalid-character' },
  { id: 'AZ-03', target: '/public/%2e%2e;/admin', reason: 'invalid-character' },
  { id: 'AZ-03', target: '/public/..%3b/admin', reason: 'invalid-character' },
  { id: 'AZ-03', target: '/public/..;', reason: 'invalid-character' },
  // AZ-07: raw backslash is refused (WHATWG parsers turn it into '/').
  { id: 'AZ-07', target: '/public\\..\\admin', reason: 'backslash' },
  { id: 'AZ-07', target: '\\admin', reason: 'not-origin-form' },
];

function expectOk(r: ParsedTarget): Extract<ParsedTarget, { ok: true }> {
  if (!r.ok) throw new Error(`expected acceptance, got ${r.reason}`);
  return r;
}

describe('parseRequestTarget: accepted targets', () => {
  for (const c of ACCEPTED) {
    it(`${c.id}: ${JSON.stringify(c.target)} → ${c.path}`, () => {
      const r = expectOk(parseRequestTarget(c.target));
      expect(r.path).toBe(c.path);
      expect(r.query).toBe(c.query ?? '');
      const q = c.target.indexOf('?');
      expect(r.rawPath).toBe(q === -1 ? c.target : c.target.slice(0, q));
      // The bare path canonicalizes the same way, and the result is a fixed point.
      expect(canonicalizePath(r.rawPath)).toEqual({ ok: true, path: c.path });
      expect(canonicalizePath(c.path)).toEqual({ ok: true, path: c.path });
    });
  }
});

describe('parseRequestTarget: rejected targets', () => {
  for (const c of REJECTED) {
    it(`${c.id}: ${JSON.stringify(c.target)} → ${c.reason}`, () => {
      expect(parseRequestTarget(c.target)).toEqual({ ok: false, reason: c.reason });
      if (!c.target.includes('?')) expect(canonicalizePath(c.target)).toEqual({ ok: false, reason: c.reason });
    });
  }
});

describe('canonicalizePath', () => {
  it('AZ-10: a bare path may not carry a query', () => {
    expect(canonicalizePath('/a?b')).toEqual({ ok: false, reason: 'invalid-character' });
  });
  it('H1-08: non-string input is refused, not thrown on', () => {
    expect(canonicalizePath(undefined as unknown as string)).toEqual({ ok: false, reason: 'not-origin-form' });
    expect(parseRequestTarget(null as unknown as string)).toEqual({ ok: false, reason: 'not-origin-form' });
  });
  it('AZ-03: the fast path returns the input unchanged', () => {
    for (const p of ['/', '/a', '/a/b/', '/api/v1/items/42', '/a%20b', '/.well-known/x', "/a:b@!$&'()*+,;=~"]) {
      expect(canonicalizePath(p)).toEqual({ ok: true, path: p });
    }
  });
  it('H1-08/AZ-04: the first offending position decides the reason', () => {
    expect(canonicalizePath('/a b%2f')).toEqual({ ok: false, reason: 'invalid-character' });
    expect(canonicalizePath('/%2fa b')).toEqual({ ok: false, reason: 'encoded-separator' });
  });
});

// ---------------------------------------------------------------------------------------------------------
// Property tests

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/** Independent, obviously-correct (slow) reference for valid paths; null where a dot parameter is refused. */
function reference(rawPath: string): string | null {
  const decoded = rawPath.replace(/%([0-9A-Fa-f]{2})/g, (_m: string, hex: string) => {
    const ch = String.fromCharCode(Number.parseInt(hex, 16));
    return UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
  });
  const parts = decoded.split('/').slice(1);
  if (parts.some((s) => /^\.\.?(;|%3B)/.test(s))) return null;
  const out: string[] = [];
  for (const s of parts) {
    if (s === '..') out.pop();
    else if (s !== '' && s !== '.') out.push(s);
  }
  const last = parts[parts.length - 1];
  const trailing = last === '' || last === '.' || last === '..';
  if (out.length === 0) return '/';
  return `/${out.join('/')}${trailing ? '/' : ''}`;
}

/** Invariants every canonical path satisfies (property c). */
function checkCanonical(path: string): void {
  expect(path.startsWith('/')).toBe(true);
  expect(path).not.toContain('//');
  for (const seg of path.split('/')) {
    expect(seg === '.' || seg === '..').toBe(false);
  }
  for (const m of path.matchAll(/%(..)/g)) {
    const hex = m[1] ?? '';
    expect(hex).toMatch(/^[0-9A-F]{2}$/); // upper-case hex only
    expect(UNRESERVED.test(String.fromCharCode(Number.parseInt(hex, 16)))).toBe(false);
    expect(hex === '2F' || hex === '5C' || hex === '00').toBe(false);
  }
}

const segment = fc.constantFrom(
  'a',
  'admin',
  '.',
  '..',
  '%2e',
  '%2E%2e',
  '.%2e',
  '%2e.',
  '%61',
  '%61dmin',
  '',
  '%3a',
  ':',
  '@',
  '~',
  '%7E',
  '%7e',
  '%25',
  '%252e',
  '%25252f',
  '...',
  '.a',
  'a.',
  ';',
  'x;y=1',
  '..;',
  '.;x',
  '%2e%2e%3b',
  '%c3%A9',
  '%20',
);
const rawPathArb = fc.array(segment, { maxLength: 12 }).map((segs) => `/${segs.join('/')}`);
const queryArb = fc.option(fc.string({ unit: fc.constantFrom('a', '=', '&', '/', '?', '.', '%2e', '%2F', '%5c', '%00', '%61', ':', '@') }), { nil: undefined });
const targetArb = fc.tuple(rawPathArb, queryArb).map(([p, q]) => (q === undefined ? p : `${p}?${q}`));
/** Noisy targets: '/' followed by characters around the interesting cases, valid or not. */
const noisyArb = fc
  .string({ unit: fc.constantFrom('/', '.', '%', '2', 'e', 'E', 'f', 'F', '5', 'c', '0', 'a', '?', ';', ' ', '#', '\\', '\u00e9'), maxLength: 40 })
  .map((s) => `/${s}`);

describe('parseRequestTarget: properties', () => {
  it('H1-08: never throws, for any string (ASCII, binary and full Unicode)', () => {
    const anyString = fc.oneof(
      fc.string(),
      fc.string({ unit: 'binary' }),
      fc.string({ unit: 'grapheme' }),
      fc.string({ unit: 'binary' }).map((s) => `/${s}`),
      noisyArb,
    );
    fc.assert(
      fc.property(anyString, (s) => {
        const r = parseRequestTarget(s);
        expect(typeof r.ok).toBe('boolean');
        const c = canonicalizePath(s);
        expect(typeof c.ok).toBe('boolean');
      }),
      { numRuns: 2000 },
    );
  });

  it('AZ-03/AZ-05/AZ-06: matches an independent reference implementation', () => {
    fc.assert(
      fc.property(targetArb, (t) => {
        const q = t.indexOf('?');
        const raw = q === -1 ? t : t.slice(0, q);
        const expected = reference(raw);
        const r = parseRequestTarget(t);
        if (expected === null) {
          expect(r).toEqual({ ok: false, reason: 'invalid-character' });
          return;
        }
        const ok = expectOk(r);
        expect(ok.path).toBe(expected);
        expect(ok.rawPath).toBe(raw);
        expect(ok.query).toBe(q === -1 ? '' : t.slice(q + 1));
      }),
      { numRuns: 3000 },
    );
  });

  it('AZ-03/AZ-05: canonicalization is idempotent', () => {
    fc.assert(
      fc.property(fc.oneof(rawPathArb, noisyArb), (p) => {
        const once = canonicalizePath(p);
        if (!once.ok) return;
        expect(canonicalizePath(once.path)).toEqual(once);
      }),
      { numRuns: 3000 },
    );
  });

  it('AZ-03/AZ-04/AZ-06: canonical output has no //, no dot segments, no encoded unreserved, no lower-case hex', () => {
    fc.assert(
      fc.property(fc.oneof(targetArb, noisyArb), (t) => {
        const r = parseRequestTarget(t);
        if (r.ok) checkCanonical(r.path);
      }),
      { numRuns: 3000 },
    );
  });

  it('AZ-10: substituting the canonical path into the target yields the same path and query', () => {
    fc.assert(
      fc.property(fc.oneof(targetArb, noisyArb), (t) => {
        const r = parseRequestTarget(t);
        if (!r.ok) return;
        const again = expectOk(parseRequestTarget(r.query === '' && !t.includes('?') ? r.path : `${r.path}?${r.query}`));
        expect(again.path).toBe(r.path);
        expect(again.query).toBe(r.query);
      }),
      { numRuns: 3000 },
    );
  });

  it('AZ-10: the query never influences the path', () => {
    fc.assert(
      fc.property(rawPathArb, queryArb, (p, q) => {
        const bare = parseRequestTarget(p);
        const withQuery = parseRequestTarget(q === undefined ? p : `${p}?${q}`);
        expect(withQuery.ok).toBe(bare.ok);
        if (bare.ok && withQuery.ok) expect(withQuery.path).toBe(bare.path);
      }),
      { numRuns: 2000 },
    );
  });
});
