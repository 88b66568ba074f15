// What a client's settings may be, whoever sets them: the CLI's argument parsers (cli/arguments.ts) and the admin API's
// body parser (admin/clients-api.ts) ask these same questions, so a client the API accepts is one the CLI would accept.
// Each check returns what is wrong in a few words, or undefined.
import { certificateIdentity } from '../authn/mtls.js';
import { isResourceUri, SCOPE_TOKEN } from '../lib/oauth-syntax.js';
import { CLIENT_ID_PATTERN } from './secrets.js';

export const MAX_NAME_CHARS = 100;
export const MAX_SCOPE_CHARS = 128;
export const MAX_SCOPES = 64;
export const MAX_AUDIENCES = 32;
/** The shortest access-token lifetime a client may have. */
export const MIN_TOKEN_TTL_S = 30;
/** The longest an old secret may keep working after a rotation. */
export const MAX_KEEP_OLD_MS = 30 * 86_400_000;

/** Characters a name must not carry: control, format (bidi overrides, zero-width), surrogate, private-use, line and paragraph separators. */
export const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Zl}\p{Zp}]/u;

export function nameProblem(value: string): string | undefined {
  const chars = [...value].length;
  if (chars === 0 || chars > MAX_NAME_CHARS || value.trim() === '') return `must be 1-${MAX_NAME_CHARS} characters, not only spaces`;
  if (UNPRINTABLE.test(value)) return 'must not contain control or invisible formatting characters';
  return undefined;
}

/** A list of RFC 6749 §3.3 scope tokens (already split; duplicates are the caller's to drop). */
export function scopesProblem(scopes: readonly string[]): string | undefined {
  if (scopes.length === 0) return 'give at least one scope';
  if (scopes.length > MAX_SCOPES) return `at most ${MAX_SCOPES} scopes`;
  for (const scope of scopes) {
    if (scope.length > MAX_SCOPE_CHARS || !SCOPE_TOKEN.test(scope)) {
      return `${JSON.stringify(scope)} is not a scope token (1-${MAX_SCOPE_CHARS} printable ASCII characters, no space, " or \\)`;
    }
  }
  return undefined;
}

export function audienceProblem(value: string): string | undefined {
  return isResourceUri(value) ? undefined : 'must be an absolute URI without a fragment, e.g. https://api.example.com';
}

/** A client's own access-token lifetime: at least MIN_TOKEN_TTL_S, at most the issuer's. */
export function tokenTtlProblem(seconds: number, issuerTtlS: number): string | undefined {
  if (!Number.isInteger(seconds) || seconds < MIN_TOKEN_TTL_S) return `must be a whole number of seconds, at least ${MIN_TOKEN_TTL_S}`;
  if (seconds > issuerTtlS) return `must be at most the issuer's access_token_ttl_s (${issuerTtlS}s)`;
  return undefined;
}

export function clientIdProblem(value: string): string | undefined {
  return CLIENT_ID_PATTERN.test(value) ? undefined : 'not a client id (1-64 of A-Z a-z 0-9 _ -)';
}

/** The URI or DNS SAN a tls_client_auth client's certificate must carry, as the mtls authenticator reads it; undefined if it is none. */
export function certificateIdentityOf(value: string): string | undefined {
  return certificateIdentity(value);
}

export const CERTIFICATE_IDENTITY_PROBLEM = 'must be a URI SAN (e.g. spiffe://example.org/billing) or a DNS name';
