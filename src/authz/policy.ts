// Route authorization: deny by default. A route admits anyone only when its config says so; a subject allow-list narrows it;
// access tokens (bearer or DPoP-bound) must be meant for the route (audience) and carry its scopes (all-of or any-of,
// exact tokens). Token refusals carry the challenge of the scheme the token came with (RFC 6750 §3, RFC 9449 §7.1).
import type { AuthzConfig } from '../config/routes.js';
import type { DeepReadonly } from '../lib/deep-freeze.js';
import { GatewayError } from '../errors/catalogue.js';
import type { AuthenticatedRequest, Authorizer, AuthzDecision, Principal } from '../pipeline/stage.js';
import { dpopChallenge } from '../lib/dpop-syntax.js';

const ALLOW: AuthzDecision = Object.freeze({ allowed: true });

export interface RoutePolicyOptions {
  /** The audience a bearer token must list for this route (resolved at request time: it may depend on the listener port). */
  readonly audience?: () => string;
  /** The challenge of a 401 for a missing credential, e.g. `Bearer realm="gatehouse"` (RFC 6750 §3). */
  readonly challenge?: string | undefined;
}

export class RoutePolicy implements Authorizer {
  private readonly allowAnyone: boolean;
  private readonly subjects: ReadonlySet<string> | undefined;
  private readonly scopes:
    | { readonly mode: 'all' | 'any'; readonly list: readonly string[]; readonly error: { readonly bearer: GatewayError; readonly dpop: GatewayError } }
    | undefined;
  private readonly audience: (() => string) | undefined;
  private readonly senderConstrained: boolean;
  private readonly challenge: Readonly<Record<string, string>>;

  constructor(
    rule: DeepReadonly<Omit<AuthzConfig, 'require_sender_constraint'>> & { readonly require_sender_constraint?: boolean },
    options: RoutePolicyOptions = {},
  ) {
    this.allowAnyone = rule.allow === 'anyone';
    this.subjects = rule.subjects === undefined ? undefined : new Set(rule.subjects);
    this.audience = options.audience;
    this.senderConstrained = rule.require_sender_constraint === true;
    this.challenge = options.challenge === undefined ? {} : { 'www-authenticate': options.challenge };
    if (rule.scopes !== undefined) {
      const [mode, list] = 'all_of' in rule.scopes ? (['all', rule.scopes.all_of] as const) : (['any', rule.scopes.any_of] as const);
      // RFC 6750 §3: the scope attribute names what the resource requires (all of them, or the alternatives).
      const required = list.join(' ');
      const refusal = (challenge: string): GatewayError =>
        new GatewayError('insufficient_scope', { reason: 'token lacks a required scope', headers: { 'www-authenticate': challenge } });
      this.scopes = {
        mode,
        list,
        error: { bearer: refusal(`Bearer error="insufficient_scope", scope="${required}"`), dpop: refusal(dpopChallenge('insufficient_scope', required)) },
      };
    }
  }

  authorize(request: AuthenticatedRequest): AuthzDecision {
    const { principal } = request;
    if (principal.method === 'anonymous' && !this.allowAnyone) {
      return { allowed: false, error: new GatewayError('unauthenticated', { reason: 'route requires a credential', headers: this.challenge }) };
    }
    // JWT-16: a token for another resource is no credential here (401, not 403: the token is the wrong one).
    const token = principal.method === 'bearer' || principal.method === 'dpop';
    if (token && this.audience !== undefined && !(principal.audiences ?? []).includes(this.audience())) {
      return {
        allowed: false,
        error: new GatewayError('invalid_token', { reason: 'audience mismatch', headers: { 'www-authenticate': tokenChallenge(principal) } }),
      };
    }
    // A bearer principal with a certificate thumbprint holds a certificate-bound token whose binding was checked against
    // this connection; a DPoP principal's proof was checked. Anything else could be replayed by whoever copied it.
    if (this.senderConstrained && principal.method === 'bearer' && principal.certificateThumbprint === undefined) {
      return {
        allowed: false,
        error: new GatewayError('invalid_token', { reason: 'token is not sender-constrained', headers: { 'www-authenticate': tokenChallenge(principal) } }),
      };
    }
    if (this.subjects !== undefined && !this.subjects.has(principal.subject)) {
      return { allowed: false, error: new GatewayError('forbidden', { reason: 'subject not on the route allow-list' }) };
    }
    if (this.scopes !== undefined) {
      const held = principal.scopes;
      const ok = this.scopes.mode === 'all' ? this.scopes.list.every((scope) => held.has(scope)) : this.scopes.list.some((scope) => held.has(scope));
      if (!ok) return { allowed: false, error: principal.method === 'dpop' ? this.scopes.error.dpop : this.scopes.error.bearer };
    }
    return ALLOW;
  }
}

function tokenChallenge(principal: Principal): string {
  return principal.method === 'dpop' ? dpopChallenge('invalid_token') : 'Bearer error="invalid_token"';
}
