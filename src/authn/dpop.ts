// The `dpop` authenticator (RFC 9449 §7): `Authorization: DPoP <token>` with a `DPoP` proof header. The token gets every
// check of a bearer token (the same verifier and cache) and must be DPoP-bound; then the proof must be fresh, name this
// request and this token, and be signed by the key the token is bound to (`cnf.jkt`). Refusals carry the DPoP challenge.
import { GatewayError } from '../errors/catalogue.js';
import type { Authenticator, AuthnResult, Principal, RequestContext } from '../pipeline/stage.js';
import { hasQueryAccessToken, type BearerAuthenticator } from './bearer.js';
import { schemeCredentials } from '../lib/auth-scheme.js';
import { dpopChallenge } from '../lib/dpop-syntax.js';
import { type DpopProofVerifier, invalidProof, requestUri, useNonce } from './dpop-proof.js';
import { ReplayCacheUnavailable } from './dpop-replay.js';

const NOT_APPLICABLE: AuthnResult = Object.freeze({ outcome: 'not-applicable' });

export class DpopAuthenticator implements Authenticator {
  readonly id = 'dpop';

  constructor(
    private readonly tokens: BearerAuthenticator,
    private readonly proofs: DpopProofVerifier,
  ) {}

  authenticate(request: RequestContext): AuthnResult | Promise<AuthnResult> {
    if (hasQueryAccessToken(request.query)) return invalidRequest('access token in the query string');
    const header = request.authorization;
    if (header === undefined) return NOT_APPLICABLE;
    const credentials = schemeCredentials(header, 'dpop');
    if (credentials.kind === 'other') return NOT_APPLICABLE;
    if (credentials.kind === 'malformed') return invalidRequest(credentials.reason);
    const { token } = credentials;
    const verified = this.tokens.authenticateToken(token, request, 'dpop');
    return verified instanceof Promise ? verified.then((result) => this.withProof(result, token, request)) : this.withProof(verified, token, request);
  }

  private async withProof(verified: AuthnResult, token: string, request: RequestContext): Promise<AuthnResult> {
    if (verified.outcome === 'not-applicable') return verified;
    if (verified.outcome === 'rejected') {
      // The bearer verifier's refusal, with the challenge of this scheme.
      const { error } = verified;
      const challenged = new GatewayError(error.code, {
        reason: error.reason,
        headers: { 'www-authenticate': dpopChallenge(error.code === 'invalid_request' ? 'invalid_request' : 'invalid_token') },
      });
      return { ...verified, error: challenged };
    }
    const { principal } = verified;
    const uri = requestUri(request.authority, request.path);
    if (uri === undefined) return rejected('request URI not expressible', principal);
    let check: Awaited<ReturnType<DpopProofVerifier['verify']>>;
    try {
      check = await this.proofs.verify(request.dpop, { method: request.method, uri, accessToken: token });
    } catch (error) {
      if (!(error instanceof ReplayCacheUnavailable)) throw error;
      const unavailable = new GatewayError('service_unavailable', { reason: error.message, headers: { 'retry-after': '1' } });
      return { outcome: 'rejected', error: unavailable, presented: principal };
    }
    if (!check.ok) {
      if (check.nonce !== undefined) return { outcome: 'rejected', error: useNonce(check.reason, check.nonce), presented: principal };
      return rejected(check.reason, principal);
    }
    // RFC 9449 §4.3 check 13: the proof is signed by the very key the token is bound to.
    if (check.proof.jkt !== principal.dpopJkt) return rejected('proof key does not match the token binding', principal);
    return verified;
  }
}

function rejected(reason: string, presented: Principal): AuthnResult {
  return { outcome: 'rejected', error: invalidProof(reason), presented };
}

function invalidRequest(reason: string): AuthnResult {
  return { outcome: 'rejected', error: new GatewayError('invalid_request', { reason, headers: { 'www-authenticate': dpopChallenge('invalid_request') } }) };
}
