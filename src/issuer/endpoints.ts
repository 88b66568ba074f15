// The authorization server's endpoints, as built-in handlers behind the pipeline (pre-auth quota, audit) like any route:
// token (RFC 6749 §4.4 client_credentials), introspection (RFC 7662), revocation (RFC 7009), metadata (RFC 8414), JWKS.
// The OAuth endpoints answer refusals with RFC 6749 §5.2 bodies and record each decision in the audit log themselves,
// with the client id as subject — before any token leaves the gateway.
import { requestDecision, type AuditSink } from '../audit/event.js';
import type { ActiveToken, BearerAuthenticator } from '../authn/bearer.js';
import { isResourceUri, SCOPE_TOKEN } from '../config/schema.js';
import { GatewayError } from '../errors/catalogue.js';
import type { AuthenticatedRequest, Handler } from '../pipeline/stage.js';
import { clientGone, sendEmpty, sendJson, sendProblem, type HttpExchange } from '../server/exchange.js';
import type { Client } from '../store/contract.js';
import type { ClientAuthenticator, ClientAuthMethod } from './client-auth.js';
import { isFormContentType, parseForm, single, type FormParams } from './form.js';
import type { KeyRing } from './keys.js';
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
  readonly clientAuth: ClientAuthenticator;
  readonly signer: TokenSigner;
  readonly bearer: BearerAuthenticator;
  readonly revocations: RevocationSet;
  readonly ring: KeyRing;
  readonly audit: AuditSink;
  readonly clockToleranceS: number;
  readonly jwksMaxAgeS: number;
  readonly now: () => number;
}

type Outcome = { readonly client: Client; readonly method: ClientAuthMethod; readonly params: FormParams } | undefined;
type TokenOutcome = { readonly client: Client; readonly method: ClientAuthMethod; readonly token: string } | undefined;

/** Who an OAuth decision is about, as far as the endpoint knows: the client (presented or authenticated) and a token. */
interface IssuerActor {
  /** The presented client id when well-formed (verified or not), or the authenticated client's. */
  readonly clientId?: string | undefined;
  /** Set once the client authenticated. */
  readonly method?: ClientAuthMethod;
  /** The token issued, or the one introspected or revoked, when it was active. */
  readonly tokenId?: string;
  readonly scopes?: readonly string[];
}

const NOBODY: IssuerActor = Object.freeze({});

abstract class OAuthEndpoint implements Handler {
  constructor(protected readonly ctx: IssuerContext) {}

  abstract handle(request: AuthenticatedRequest, exchange: HttpExchange): Promise<void>;

  /** Reads the form and authenticates the client. Undefined when a refusal was already sent. */
  protected async authenticatedForm(request: AuthenticatedRequest, exchange: HttpExchange): Promise<Outcome> {
    const params = await this.form(request, exchange);
    if (params === undefined) return undefined;
    const auth = await this.ctx.clientAuth.authenticate({ authorization: request.authorization, params, limitKey: request.connection.limitKey });
    if (!auth.ok) {
      this.refuse(request, exchange, auth.error, { clientId: auth.clientId });
      return undefined;
    }
    return { client: auth.client, method: auth.method, params };
  }

  /** Introspection and revocation: an authenticated client and exactly one `token` parameter (RFC 7662 §2.1, RFC 7009 §2.1). */
  protected async authenticatedToken(request: AuthenticatedRequest, exchange: HttpExchange): Promise<TokenOutcome> {
    const outcome = await this.authenticatedForm(request, exchange);
    if (outcome === undefined) return undefined;
    const { client, method, params } = outcome;
    const token = single(params, 'token');
    if (token === undefined || typeof token === 'object') {
      this.refuse(request, exchange, new GatewayError('invalid_request', { reason: token === undefined ? 'token missing' : 'token repeated' }), { clientId: client.id, method });
      return undefined;
    }
    return { client, method, token };
  }

  /** OA-01, OA-02, OA-14: POST with a form body only, nothing in the query, bounded size and parameter count. */
  protected async form(request: AuthenticatedRequest, exchange: HttpExchange): Promise<FormParams | undefined> {
    if (request.query !== '') {
      // RFC 6749 §3.2 / §2.3.1: parameters (and above all a client_secret) never travel in the URL.
      this.refuse(request, exchange, new GatewayError('invalid_request', { reason: 'parameters in the query string' }), NOBODY, true);
      return undefined;
    }
    if (!isFormContentType(headerValue(exchange, 'content-type'))) {
      this.refuse(request, exchange, new GatewayError('unsupported_media_type', { reason: 'not application/x-www-form-urlencoded' }), NOBODY, true);
      return undefined;
    }
    const body = await readBody(exchange, request.route.bodyLimitBytes);
    if (body === 'gone') {
      // Nobody is left to answer, but the request is on record like every other.
      this.record(request, 'deny', new GatewayError('bad_request', { reason: 'client left before the body was complete' }), NOBODY);
      return undefined;
    }
    if (body === 'too_large') {
      this.refuse(request, exchange, new GatewayError('payload_too_large', { reason: 'form over the endpoint limit' }), NOBODY, true);
      return undefined;
    }
    const parsed = parseForm(body, MAX_FORM_PARAMS);
    if (!parsed.ok) {
      this.refuse(request, exchange, new GatewayError('invalid_request', { reason: parsed.reason }), NOBODY);
      return undefined;
    }
    return parsed.value;
  }

  /** Records the refusal, then answers with an RFC 6749 §5.2 body. */
  protected refuse(
    request: AuthenticatedRequest,
    exchange: HttpExchange,
    error: GatewayError,
    actor: IssuerActor,
    unreadBody = false,
  ): void {
    this.record(request, 'deny', error, actor);
    if (clientGone(exchange)) return;
    // A body the gateway did not read would be taken for the next request on this HTTP/1.1 connection.
    sendProblem(exchange, error, { oauth: true, close: unreadBody && request.hasBody });
  }

  protected record(request: AuthenticatedRequest, decision: 'allow' | 'deny', error: GatewayError | undefined, actor: IssuerActor): void {
    // A refused query is recorded too (redacted). The subject is the client id presented, verified or not (who is being
    // tried); `client_id` only one that authenticated, since anyone can present any id. The code on record is the OAuth
    // `error` the client received (RFC 6749 §5.2 body).
    const authenticated = actor.method !== undefined;
    const event = requestDecision(
      request,
      decision,
      'issuer',
      error,
      {
        subject: actor.clientId ?? null,
        authMethod: actor.method ?? null,
        certThumbprint: null,
        clientId: authenticated ? (actor.clientId ?? null) : null,
        tokenId: actor.tokenId ?? null,
        scopes: actor.scopes ?? null,
      },
      true,
    );
    // Throws when the audit log is unavailable: the pipeline then fails closed and nothing is issued.
    this.ctx.audit.append(event);
  }
}

/** POST /oauth2/token: client_credentials only. */
export class TokenEndpoint extends OAuthEndpoint {
  async handle(request: AuthenticatedRequest, exchange: HttpExchange): Promise<void> {
    const params = await this.form(request, exchange);
    if (params === undefined) return;

    // What needs no client is checked first: a request that cannot succeed never costs an argon2 verification.
    const grantType = single(params, 'grant_type');
    const scope = single(params, 'scope');
    if (grantType === undefined || typeof grantType === 'object') {
      return this.refuse(request, exchange, new GatewayError('invalid_request', { reason: grantType === undefined ? 'grant_type missing' : 'grant_type repeated' }), NOBODY);
    }
    if (grantType !== 'client_credentials') {
      return this.refuse(request, exchange, new GatewayError('unsupported_grant_type', { reason: 'grant type not supported' }), NOBODY);
    }
    if (typeof scope === 'object') return this.refuse(request, exchange, new GatewayError('invalid_request', { reason: 'scope repeated' }), NOBODY);
    // RFC 8707 §2: `resource` may repeat, once per audience wanted.
    const resources = params.get('resource') ?? [];
    if (!resources.every(isResourceUri)) {
      return this.refuse(request, exchange, new GatewayError('invalid_resource', { reason: 'resource is not an absolute URI without fragment' }), NOBODY);
    }

    const auth = await this.ctx.clientAuth.authenticate({ authorization: request.authorization, params, limitKey: request.connection.limitKey });
    if (!auth.ok) return this.refuse(request, exchange, auth.error, { clientId: auth.clientId });
    const { client, method } = auth;

    const scopes = grantedScopes(scope, client.scopes);
    if (scopes === undefined) return this.refuse(request, exchange, new GatewayError('invalid_scope', { reason: 'scope not allowed for the client' }), { clientId: client.id, method });
    const allowed = client.audiences.length > 0 ? client.audiences : [this.ctx.defaultAudience()];
    if (!resources.every((resource) => allowed.includes(resource))) {
      return this.refuse(request, exchange, new GatewayError('invalid_resource', { reason: 'resource not allowed for the client' }), { clientId: client.id, method });
    }
    const audiences = resources.length > 0 ? [...new Set(resources)] : allowed;
    // A token that the bearer path would refuse at once (its iat before the client's cut-off: the disable was made on a
    // machine whose clock runs ahead of this one) is never issued: the client is told to retry shortly.
    const nowS = Math.floor(this.ctx.now() / 1000);
    if (client.tokensNotBeforeS !== null && nowS < client.tokensNotBeforeS) {
      const retryAfter = String(client.tokensNotBeforeS - nowS);
      const error = new GatewayError('service_unavailable', { reason: 'token iat would precede the client token cut-off', headers: { 'retry-after': retryAfter } });
      return this.refuse(request, exchange, error, { clientId: client.id, method });
    }

    const issued = await this.ctx.signer.issue({ clientId: client.id, scopes, audiences, lifetimeS: client.accessTokenTtlS });
    this.record(request, 'allow', undefined, { clientId: client.id, method, tokenId: issued.jti, scopes });
    if (clientGone(exchange)) return;
    sendJson(
      exchange,
      200,
      { access_token: issued.token, token_type: 'Bearer', expires_in: issued.expiresIn, ...(scopes.length > 0 ? { scope: scopes.join(' ') } : {}) },
      NO_STORE,
    );
  }
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
export class IntrospectionEndpoint extends OAuthEndpoint {
  async handle(request: AuthenticatedRequest, exchange: HttpExchange): Promise<void> {
    const outcome = await this.authenticatedToken(request, exchange);
    if (outcome === undefined) return;
    const { client, method, token } = outcome;
    const active = await this.ctx.bearer.introspect(token);
    // A client learns about its own tokens; a resource server registered with gatehouse:introspect about any.
    const visible = active !== undefined && (active.principal.clientId === client.id || client.scopes.includes(INTROSPECT_ANY_SCOPE));
    this.record(request, 'allow', undefined, { clientId: client.id, method, ...(visible ? { tokenId: active.jti } : {}) });
    if (clientGone(exchange)) return;
    sendJson(exchange, 200, visible ? introspection(active) : { active: false }, NO_STORE);
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
    token_type: 'Bearer',
    ...(token.boundThumbprint !== undefined ? { cnf: { 'x5t#S256': token.boundThumbprint } } : {}),
  };
}

/** POST /oauth2/revoke (RFC 7009): a client revokes its own tokens; an invalid or unknown token is answered 200 as well. */
export class RevocationEndpoint extends OAuthEndpoint {
  async handle(request: AuthenticatedRequest, exchange: HttpExchange): Promise<void> {
    const outcome = await this.authenticatedToken(request, exchange);
    if (outcome === undefined) return;
    const { client, method, token } = outcome;
    // token_type_hint is optional and only a hint (RFC 7009 §2.1): there is one kind of token here, so it is ignored.
    const active = await this.ctx.bearer.introspect(token);
    if (active !== undefined) {
      if (active.principal.clientId !== client.id) {
        // RFC 7009 §2.1: the token must have been issued to the client revoking it (OA-15).
        return this.refuse(request, exchange, new GatewayError('unauthorized_client', { reason: 'token belongs to another client' }), { clientId: client.id, method });
      }
      // Kept until the token could no longer pass any verifier's clock tolerance.
      await this.ctx.revocations.revoke({ iss: active.iss, jti: active.jti, expiresAt: (active.exp + this.ctx.clockToleranceS) * 1000 });
    }
    this.record(request, 'allow', undefined, { clientId: client.id, method, ...(active !== undefined ? { tokenId: active.jti } : {}) });
    if (clientGone(exchange)) return;
    sendEmpty(exchange, 200, NO_STORE);
  }
}

/** GET /.well-known/oauth-authorization-server (RFC 8414). */
export class MetadataEndpoint implements Handler {
  constructor(private readonly ctx: IssuerContext) {}

  async handle(_request: AuthenticatedRequest, exchange: HttpExchange): Promise<void> {
    const issuer = this.ctx.issuer();
    const origin = new URL(issuer).origin;
    const clientAuthMethods = ['client_secret_basic', 'client_secret_post'];
    sendJson(
      exchange,
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
      },
      { 'cache-control': 'public, max-age=300' },
    );
  }
}

/** GET /.well-known/jwks.json: every published key (pending ones before they sign, retired ones until their tokens expire). */
export class JwksEndpoint implements Handler {
  constructor(private readonly ctx: IssuerContext) {}

  async handle(_request: AuthenticatedRequest, exchange: HttpExchange): Promise<void> {
    // Cached no longer than a new key is published before it signs, so verifiers always see a key before its tokens.
    sendJson(exchange, 200, this.ctx.ring.publishedJwks(), {
      'content-type': 'application/jwk-set+json',
      'cache-control': `public, max-age=${this.ctx.jwksMaxAgeS}`,
    });
  }
}

function headerValue(exchange: HttpExchange, name: string): string | undefined {
  const value = exchange.req.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/** The whole body, or 'too_large' as soon as it crosses `limit` (reading stops), or 'gone' when the client left. */
function readBody(exchange: HttpExchange, limit: number): Promise<Buffer | 'too_large' | 'gone'> {
  return new Promise((resolve) => {
    const { req } = exchange;
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (result: Buffer | 'too_large' | 'gone'): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onGone);
      req.off('close', onClose);
      resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        req.pause();
        finish('too_large');
      } else chunks.push(chunk);
    };
    const onEnd = (): void => finish(Buffer.concat(chunks, size));
    const onGone = (): void => finish('gone');
    const onClose = (): void => {
      if (!req.complete) finish('gone');
    };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onGone);
    req.once('close', onClose);
  });
}
