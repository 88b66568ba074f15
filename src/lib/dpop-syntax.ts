// DPoP (RFC 9449) names shared by the proof checks, the challenges of routes and authorization, and the issuer metadata.

/** Asymmetric only (RFC 9449 §4.3 check 5); jose refuses RSA keys under 2048 bits. */
export const DPOP_ALGORITHMS = Object.freeze(['ES256', 'ES384', 'EdDSA', 'PS256', 'RS256'] as const);
export type DpopAlgorithm = (typeof DPOP_ALGORITHMS)[number];

/** The `algs` a DPoP challenge lists (RFC 9449 §7.1). */
const DPOP_ALGS_PARAMETER = DPOP_ALGORITHMS.join(' ');

/**
 * The DPoP challenge of a 401 or 403 (RFC 9449 §7.1): with an `error` (and, for insufficient_scope, the `scope` required),
 * or without one when no credential came at all.
 */
export function dpopChallenge(
  error?: 'invalid_dpop_proof' | 'use_dpop_nonce' | 'invalid_token' | 'invalid_request' | 'insufficient_scope',
  scope?: string,
): string {
  const params = [...(error !== undefined ? [`error="${error}"`] : []), ...(scope !== undefined ? [`scope="${scope}"`] : []), `algs="${DPOP_ALGS_PARAMETER}"`];
  return `DPoP ${params.join(', ')}`;
}
