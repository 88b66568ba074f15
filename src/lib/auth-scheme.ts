// The credentials of an Authorization header for one token scheme (RFC 9110 §11.4): `Bearer` (RFC 6750 §2.1) and `DPoP`
// (RFC 9449 §7.1) are both `scheme 1*SP token68`, the scheme case-insensitive.

/** RFC 9110 §5.6.2 token: the auth-scheme. */
const AUTH_SCHEME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/;

export type SchemeCredentials =
  /** Another scheme (Basic, …): another authenticator's credential. */
  { readonly kind: 'other' } | { readonly kind: 'malformed'; readonly reason: string } | { readonly kind: 'token'; readonly token: string };

/** The token after `scheme` (lower-case) and exactly one space; any other whitespace makes the credentials malformed. */
export function schemeCredentials(header: string, scheme: 'bearer' | 'dpop'): SchemeCredentials {
  const found = AUTH_SCHEME.exec(header)?.[0];
  if (found === undefined || found.toLowerCase() !== scheme) return { kind: 'other' };
  if (header.length === found.length) return { kind: 'malformed', reason: `${scheme} scheme without a token` };
  if (header.charCodeAt(found.length) !== 0x20) return { kind: 'malformed', reason: `malformed ${scheme} credentials` };
  const token = header.slice(found.length + 1);
  return token === '' ? { kind: 'malformed', reason: `${scheme} scheme without a token` } : { kind: 'token', token };
}
