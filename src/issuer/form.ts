// Strict parsers for what OAuth endpoints receive: an application/x-www-form-urlencoded body and HTTP Basic client
// credentials. Both run on attacker bytes, so they are bounded, never throw on bad input, and never guess.

/** Parameters of one form, in order; a repeated name keeps every value so the caller can refuse the repeat. */
export type FormParams = ReadonlyMap<string, readonly string[]>;

export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
/** A percent escape is % and two hex digits; anything else after % is malformed, not literal. */
const BAD_PERCENT = /%(?![0-9A-Fa-f]{2})/;

/**
 * WHATWG application/x-www-form-urlencoded parsing, but strict: malformed percent escapes and invalid UTF-8 are refused
 * instead of being replaced, and at most `maxParams` pairs are read (OA-14). RFC 6749 §3.1: a parameter without a value is
 * treated as omitted, so empty values are dropped here.
 */
export function parseForm(body: Buffer, maxParams: number): Parsed<FormParams> {
  let text: string;
  try {
    text = UTF8.decode(body);
  } catch {
    return { ok: false, reason: 'body is not UTF-8' };
  }
  const params = new Map<string, string[]>();
  if (text === '') return { ok: true, value: params };
  const pairs = text.split('&', maxParams + 1);
  if (pairs.length > maxParams) return { ok: false, reason: 'too many parameters' };
  for (const pair of pairs) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const name = decodeComponent(eq === -1 ? pair : pair.slice(0, eq));
    const value = decodeComponent(eq === -1 ? '' : pair.slice(eq + 1));
    if (name === undefined || value === undefined) return { ok: false, reason: 'malformed percent-encoding' };
    if (name === '' || value === '') continue;
    const values = params.get(name);
    if (values === undefined) params.set(name, [value]);
    else values.push(value);
  }
  return { ok: true, value: params };
}

function decodeComponent(raw: string): string | undefined {
  if (BAD_PERCENT.test(raw)) return undefined;
  try {
    // decodeURIComponent refuses percent-encoded bytes that are not UTF-8.
    return decodeURIComponent(raw.replaceAll('+', ' '));
  } catch {
    return undefined;
  }
}

/**
 * The single value of a parameter that must not repeat (RFC 6749 §3.2). Undefined when absent; `{ repeated: true }` when it
 * appears more than once.
 */
export function single(params: FormParams, name: string): string | undefined | { readonly repeated: true } {
  const values = params.get(name);
  if (values === undefined) return undefined;
  if (values.length > 1) return { repeated: true };
  return values[0];
}

export interface BasicCredentials {
  readonly clientId: string;
  readonly clientSecret: string;
}

/** RFC 9110 §11.1 token68 as base64: the credentials of the Basic scheme (RFC 7617). */
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * Client credentials from `Authorization: Basic …` (RFC 6749 §2.3.1): base64 of `id:secret`, each form-urlencoded first
 * (so a client may send `%3A` inside an id or secret). Undefined when the scheme is not Basic.
 */
export function parseBasicCredentials(header: string): Parsed<BasicCredentials> | undefined {
  const space = header.indexOf(' ');
  const scheme = space === -1 ? header : header.slice(0, space);
  if (scheme.toLowerCase() !== 'basic') return undefined;
  const encoded = header.slice(space + 1);
  if (space === -1 || encoded.length === 0 || encoded.length % 4 !== 0 || !BASE64.test(encoded)) {
    return { ok: false, reason: 'malformed basic credentials' };
  }
  let decoded: string;
  try {
    decoded = UTF8.decode(Buffer.from(encoded, 'base64'));
  } catch {
    return { ok: false, reason: 'basic credentials are not UTF-8' };
  }
  const colon = decoded.indexOf(':');
  if (colon === -1) return { ok: false, reason: 'basic credentials without a colon' };
  const clientId = decodeComponent(decoded.slice(0, colon));
  const clientSecret = decodeComponent(decoded.slice(colon + 1));
  if (clientId === undefined || clientSecret === undefined) return { ok: false, reason: 'malformed basic credentials' };
  if (clientId === '' || clientSecret === '') return { ok: false, reason: 'empty basic credentials' };
  return { ok: true, value: { clientId, clientSecret } };
}

/** `type/subtype` of a Content-Type, lower-cased, and whether any charset parameter it has is UTF-8. */
export function isFormContentType(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const [type, ...parameters] = contentType.split(';');
  if (type?.trim().toLowerCase() !== 'application/x-www-form-urlencoded') return false;
  for (const parameter of parameters) {
    const [name, value] = parameter.split('=');
    if (name?.trim().toLowerCase() === 'charset' && value?.trim().replace(/^"|"$/g, '').toLowerCase() !== 'utf-8') return false;
  }
  return true;
}
