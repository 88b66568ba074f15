// OAuth 2 syntax checks shared by the config schema, the issuer's endpoints and the CLI.

/** RFC 6749 §3.3 scope-token = 1*NQCHAR. */
export const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;

/** An absolute URI without a fragment (RFC 8707 §2 resource indicator; RFC 7519 `aud` value as Gatehouse issues it). */
export function isResourceUri(value: string): boolean {
  if (value.length > 512 || !/^[a-z][a-z0-9+.-]*:[\x21-\x7E]+$/i.test(value) || value.includes('#')) return false;
  return URL.canParse(value);
}
