// The authorization server's endpoints, as routes like any other: token (RFC 6749 §4.4 client_credentials), introspection
// (RFC 7662), revocation (RFC 7009), metadata (RFC 8414), JWKS. The POST endpoints read their form in a body intake (the
// client's credentials may be in it), authenticate the client with OAuthClientAuthenticator, and answer as values that the
// pipeline records — with the client, and the token issued, introspected or revoked — before any byte leaves the gateway.
import type { ActiveToken, BearerAuthenticator } from '../authn/bearer.js';
import { type DpopProofVerifier, requestUri } from '../authn/dpop-proof.js';
import { DPOP_ALGORITHMS } from '../lib/dpop-syntax.js';
import { ReplayCacheUnavailable } from '../authn/dpop-replay.js';
import { isResourceUri, SCOPE_TOKEN } from '../lib/oauth-syntax.js';
import { GatewayError } from '../errors/catalogue.js';
import type {
  AuthenticatedRequest,
  BodyIntake,
  ClientGone,
  FormParams,
  Refusal,
  RequestBody,
  RequestContext,
  Service,
  ServiceResult,
} from '../pipeline/stage.js';
import { clientOf } from './client-auth.js';
import { isFormContentType, parseForm, single } from './form.js';
import type { KeyRing } from './key-ring.js';
import type { RevocationSet } from './revocations.js';
import type { TokenSigner } from './tokens.js';

/** More parameters than any OAuth request here needs; a form with more is refused before it is decoded further (OA-14). */
const MAX_FORM_PARAMS = 32;
/** Body limit of the POST endpoints; a client_credentials request is a few hundred bytes. */
export const OAUTH_BODY_LIMIT_BYTES = 8192;
/** A client may introspect its own tokens; with this scope registered, any token (a resource server's privilege). */
export const INTROSPECT_ANY_SCOPE = 'gatehouse:introspect';
const NO_STORE = Object.freeze({ 'cache-control': 'no-store', pragma: 'no-cache' });

/** What the endpoints share: the issuer's identity (resolved once the listener has a port) and its parts. */
export interface IssuerContext {
  readonly issuer: () => string;
  readonly defaultAudience: () => string;
  readonly signer: TokenSigner;
  readonly bearer: BearerAuthenticator;
  /** DPoP proofs sent to the token endpoint (RFC 9449 §5). */
  readonly proofs: DpopProofVerifier;
  /** The listener asks for client certificates (tls.client_ca): tls_client_auth and certificate-bound tokens are offered. */
  readonly clientCertificates: boolean;
  readonly revocations: RevocationSet;
  readonly ring: KeyRing;
  readonly clockToleranceS: number;
  readonly jwksMaxAgeS: number;
  readonly now: () => number;
}

function refused(code: ConstructorParameters<typeof GatewayError>[0], reason: string, unreadBody = false): Refusal {
  return { outcome: 'refused', error: new GatewayError(code, { reason }), unreadBody };
}

/** A check of the form that needs no client: a request that cannot succeed never costs an argon2 verification. */
export type FormPrecheck = (params: FormParams) => Refusal | undefined;

/**
 * OA-01, OA-02, OA-14: POST with a form body only, nothing in the query, bounded size and parameter count — read before
 * client authentication, which may need the form's client_id and client_secret (RFC 6749 §2.3.1).
 */
export class FormIntake implements BodyIntake {
  constructor(private readonly precheck?: FormPrecheck) {}

  async read(request: RequestContext, source: RequestBody): Promise<{ readonly outcome: 'read'; readonly form: FormParams } | Refusal | ClientGone> {
    // RFC 6749 §3.2 / §2.3.1: parameters (and above all a client_secret) never travel in the URL.
    if (request.query !== '') return refused('invalid_request', 'parameters in the query string', true);
    if (!isFormContentType(source.header('content-type'))) return refused('unsupported_media_type', 'not application/x-www-form-urlencoded', true);
    const body = await source.read(request.route.bodyLimitBytes);
    // Nobody is left to answer, but the request is on record like every other.
    if (body === 'gone') return { outcome: 'gone', reason: 'client left before the body was complete' };
    if (body === 'too_large') return refused('payload_too_large', 'form over the endpoint limit', true);
    const parsed = parseForm(body, MAX_FORM_PARAMS);
    if (!parsed.ok) return refused('invalid_request', parsed.reason);
    return this.precheck?.(parsed.value) ?? { outcome: 'read', form: parsed.value };
  }
}

/** The form the intake read (the route is built with one; without it the route is misconfigured, a fault). */
function formOf(request: AuthenticatedRequest): FormParams {
  if (request.form === undefined) throw new Error(`route ${request.route.id} has no form intake`);
  return request.form;
}

/**
 * Introspection and revocation: the token of exactly one `token` parameter (RFC 7662 §2.1, RFC 7009 §2.1), checked once
 * the client authenticated; `active` when it is a token this gateway would accept now.
 */
async function presentedToken(request: AuthenticatedRequest, bearer: BearerAuthenticator): Promise<{ readonly active: ActiveToken | undefined } | Refusal> {
  const token = single(formOf(request), 'token');
  if (token === undefined) return refused('invalid_request', 'token missing');
  if (typeof token === 'object') return refused('invalid_request', 'token repeated');
  // token_type_hint is optional and only a hint (RFC 7009 §2.1): there is one kind of token here, so it is ignored.
  return { active: await bearer.introspect(token) };
}

/** The token endpoint's checks that need no client: grant type, a single scope, resource URIs (RFC 8707 §2). */
export const tokenRequestPrecheck: FormPrecheck = (params) => {
  const grantType = single(params, 'grant_type');
  if (grantType === undefined) return refused('invalid_request', 'grant_type missing');
  if (typeof grantType === 'object') return refused('invalid_request', 'grant_type repeated');
  if (grantType !== 'client_credentials') return refused('unsupported_grant_type', 'grant type not supported');
  if (typeof single(params, 'scope') === 'object') return refused('invalid_request', 'scope repeated');
  // RFC 8707 §2: `resource` may repeat, once per audience wanted.
  if (!(params.get('resource') ?? []).every(isResourceUri)) return refused('invalid_resource', 'resource is not an absolute URI without fragment');
  return undefined;
};

/** POST /oauth2/token: client_credentials only (the intake's precheck refused every other grant). */
export class TokenEndpoint implements Service {
  readonly kind = 'service';

  constructor(private readonly ctx: IssuerContext) {}

  async serve(request: AuthenticatedRequest): Promise<ServiceResult> {
    const client = clientOf(request.principal);
    const params = formOf(request);
    const scope = single(params, 'scope');
    const resources = params.get('resource') ?? [];
    const scopes = grantedScopes(typeof scope === 'string' ? scope : undefined, client.scopes);
    if (scopes === undefined) return refused('invalid_scope', 'scope not allowed for the client');
    const allowed = client.audiences.length > 0 ? client.audiences : [this.ctx.defaultAudience()];
    if (!resources.every((resource) => allowed.includes(resource))) return refused('invalid_resource', 'resource not allowed for the client');
    const audiences = resources.length > 0 ? [...new Set(resources)] : allowed;
    // A token that the bearer path would refuse at once (its iat before the client's cut-off: the disable was made on a
    // machine whose clock runs ahead of this one) is never issued: the client is told to retry shortly.
    const nowS = Math.floor(this.ctx.now() / 1000);
    if (client.tokensNotBeforeS !== null && nowS < client.tokensNotBeforeS) {
      const retryAfter = String(client.tokensNotBeforeS - nowS);
      const error = new GatewayError('service_unavailable', {
        reason: 'token iat would precede the client token cut-off',
        headers: { 'retry-after': retryAfter },
      });
      return { outcome: 'refused', error };
    }

    // RFC 9449 §5: a request with a DPoP proof gets a token bound to the proof's key; a bad proof gets no token at all.
    let jkt: string | undefined;
    if (client.requireDpop && request.dpop === undefined) return refused('invalid_dpop_proof_grant', 'the client must send a DPoP proof');
    if (request.dpop !== undefined) {
      const proof = await this.checkProof(request);
      if (!proof.ok) return proof.refusal;
      jkt = proof.jkt;
    }

    // RFC 8705 §3: a token requested over a connection that proved a client certificate is bound to it — unless the client
    // bound it to a DPoP key instead (one binding per token).
    const x5t = jkt === undefined ? request.principal.certificateThumbprint : undefined;
    const binding = jkt !== undefined ? { jkt } : x5t !== undefined ? { x5t } : {};
    const issued = await this.ctx.signer.issue({ clientId: client.id, scopes, audiences, lifetimeS: client.accessTokenTtlS, ...binding });
    const tokenType = jkt !== undefined ? 'DPoP' : 'Bearer';
    return {
      outcome: 'answered',
      credential: { ...clientCredential(request), tokenId: issued.jti, scopes: new Set(scopes) },
      answer: {
        status: 200,
        body: { access_token: issued.token, token_type: tokenType, expires_in: issued.expiresIn, ...(scopes.length > 0 ? { scope: scopes.join(' ') } : {}) },
        headers: NO_STORE,
      },
    };
  }

  private async checkProof(
    request: AuthenticatedRequest,
  ): Promise<{ readonly ok: true; readonly jkt: string } | { readonly ok: false; readonly refusal: Refusal }> {
    const uri = requestUri(request.authority, request.path);
    try {
      const check = uri === undefined ? undefined : await this.ctx.proofs.verify(request.dpop, { method: request.method, uri });
      if (check?.ok === true) return { ok: true, jkt: check.proof.jkt };
      if (check?.nonce !== undefined) {
        // RFC 9449 §8: the client retries with this nonce in its proof.
        const error = new GatewayError('use_dpop_nonce_grant', { reason: check.reason, headers: { 'dpop-nonce': check.nonce } });
        return { ok: false, refusal: { outcome: 'refused', error } };
      }
      return { ok: false, refusal: refused('invalid_dpop_proof_grant', check?.reason ?? 'request URI not expressible') };
    } catch (error) {
      if (!(error instanceof ReplayCacheUnavailable)) throw error;
      const unavailable = new GatewayError('service_unavailable', { reason: error.message, headers: { 'retry-after': '1' } });
      return { ok: false, refusal: { outcome: 'refused', error: unavailable } };
    }
  }
}

/** The authenticated client, as the records of its endpoints name it. */
function clientCredential(request: AuthenticatedRequest): {
  readonly method: AuthenticatedRequest['principal']['method'];
  readonly subject: string;
  readonly clientId: string;
} {
  const { principal } = request;
  return { method: principal.method, subject: principal.subject, clientId: principal.subject };
}

/**
 * RFC 6749 §3.3: absent scope = every scope the client is registered for (the documented default); present = a list of
 * exact scope tokens, each registered for the client. Undefined when anything is not (→ invalid_scope, OA-08).
 */
function grantedScopes(requested: string | undefined, registered: readonly string[]): readonly string[] | undefined {
  if (requested === undefined) return registered;
  const granted: string[] = [];
  for (const token of requested.split(' ')) {
    if (token === '') continue;
    if (!SCOPE_TOKEN.test(token) || !registered.includes(token)) return undefined;
    if (!granted.includes(token)) granted.push(token);
  }
  return granted.length > 0 ? granted : undefined;
}

/** POST /oauth2/introspect (RFC 7662). Anything not active now says `{"active":false}` and nothing else (OA-16). */
export class IntrospectionEndpoint implements Service {
  readonly kind = 'service';

  constructor(private readonly ctx: IssuerContext) {}

  async serve(request: AuthenticatedRequest): Promise<ServiceResult> {
    const client = clientOf(request.principal);
    const presented = await presentedToken(request, this.ctx.bearer);
    if ('outcome' in presented) return presented;
    const { active } = presented;
    // A client learns about its own tokens; a resource server registered with gatehouse:introspect about any.
    const visible = active !== undefined && (active.principal.clientId === client.id || client.scopes.includes(INTROSPECT_ANY_SCOPE));
    return {
      outcome: 'answered',
      credential: { ...clientCredential(request), ...(visible ? { tokenId: active.jti } : {}) },
      answer: { status: 200, body: visible ? introspection(active) : { active: false }, headers: NO_STORE },
    };
  }
}

function introspection(token: ActiveToken): Record<string, unknown> {
  const { principal } = token;
  const audiences = principal.audiences ?? [];
  return {
    active: true,
    scope: [...principal.scopes].join(' '),
    client_id: principal.clientId,
    sub: principal.subject,
    aud: audiences.length === 1 ? audiences[0] : audiences,
    iss: token.iss,
    exp: token.exp,
    iat: token.iat,
    jti: token.jti,
    token_type: token.boundJkt !== undefined ? 'DPoP' : 'Bearer',
    ...(token.boundThumbprint !== undefined ? { cnf: { 'x5t#S256': token.boundThumbprint } } : {}),
    ...(token.boundJkt !== undefined ? { cnf: { jkt: token.boundJkt } } : {}),
  };
}

/** POST /oauth2/revoke (RFC 7009): a client revokes its own tokens; an invalid or unknown token is answered 200 as well. */
export class RevocationEndpoint implements Service {
  readonly kind = 'service';

  constructor(private readonly ctx: IssuerContext) {}

  async serve(request: AuthenticatedRequest): Promise<ServiceResult> {
    const client = clientOf(request.principal);
    const presented = await presentedToken(request, this.ctx.bearer);
    if ('outcome' in presented) return presented;
    const { active } = presented;
    if (active !== undefined) {
      // RFC 7009 §2.1: the token must have been issued to the client revoking it (OA-15).
      if (active.principal.clientId !== client.id) return refused('unauthorized_client', 'token belongs to another client');
      // Kept until the token could no longer pass any verifier's clock tolerance.
      await this.ctx.revocations.revoke({ iss: active.iss, jti: active.jti, expiresAt: (active.exp + this.ctx.clockToleranceS) * 1000 });
    }
    return {
      outcome: 'answered',
      credential: { ...clientCredential(request), ...(active !== undefined ? { tokenId: active.jti } : {}) },
      answer: { status: 200, body: undefined, headers: NO_STORE },
    };
  }
}

/** GET /.well-known/oauth-authorization-server (RFC 8414). */
export class MetadataEndpoint implements Service {
  readonly kind = 'service';

  constructor(private readonly ctx: IssuerContext) {}

  async serve(): Promise<ServiceResult> {
    const issuer = this.ctx.issuer();
    const origin = new URL(issuer).origin;
    const clientAuthMethods = ['client_secret_basic', 'client_secret_post', ...(this.ctx.clientCertificates ? ['tls_client_auth'] : [])];
    return answered(
      200,
      {
        // Byte-identical to the `iss` of every token (RFC 8414 §3.3, OA-17).
        issuer,
        token_endpoint: `${origin}/oauth2/token`,
        jwks_uri: `${origin}/.well-known/jwks.json`,
        introspection_endpoint: `${origin}/oauth2/introspect`,
        revocation_endpoint: `${origin}/oauth2/revoke`,
        grant_types_supported: ['client_credentials'],
        // RFC 8414 §2 requires the member; no authorization endpoint, so no response type.
        response_types_supported: [],
        token_endpoint_auth_methods_supported: clientAuthMethods,
        introspection_endpoint_auth_methods_supported: clientAuthMethods,
        revocation_endpoint_auth_methods_supported: clientAuthMethods,
        // Access tokens are signed with these (never `none`).
        access_token_signing_alg_values_supported: ['EdDSA', 'ES256'],
        // RFC 8705 §3.3: tokens requested over a client-certificate connection are bound to that certificate.
        ...(this.ctx.clientCertificates ? { tls_client_certificate_bound_access_tokens: true } : {}),
        // RFC 9449 §5.1: the token endpoint binds tokens to DPoP proofs signed with these (asymmetric only).
        dpop_signing_alg_values_supported: DPOP_ALGORITHMS,
      },
      { 'cache-control': 'public, max-age=300' },
    );
  }
}

/** GET /.well-known/jwks.json: every published key (pending ones before they sign, retired ones until their tokens expire). */
export class JwksEndpoint implements Service {
  readonly kind = 'service';

  constructor(private readonly ctx: IssuerContext) {}

  async serve(): Promise<ServiceResult> {
    // Cached no longer than a new key is published before it signs, so verifiers always see a key before its tokens.
    return answered(200, this.ctx.ring.publishedJwks(), {
      'content-type': 'application/jwk-set+json',
      'cache-control': `public, max-age=${this.ctx.jwksMaxAgeS}`,
    });
  }
}

function answered(status: number, body: unknown, headers: Readonly<Record<string, string>>): ServiceResult {
  return { outcome: 'answered', answer: { status, body, headers } };
}
