// Route authorization: deny by default. A route admits anyone only when its config says so; a subject allow-list narrows it.
import type { RouteConfig } from '../config/schema.js';
import type { DeepReadonly } from '../lib/deep-freeze.js';
import { GatewayError } from '../errors/catalogue.js';
import type { AuthenticatedRequest, Authorizer, AuthzDecision } from '../pipeline/stage.js';

const ALLOW: AuthzDecision = Object.freeze({ allowed: true });

export class RoutePolicy implements Authorizer {
  private readonly allowAnyone: boolean;
  private readonly subjects: ReadonlySet<string> | undefined;

  constructor(rule: DeepReadonly<RouteConfig['authz']>) {
    this.allowAnyone = rule.allow === 'anyone';
    this.subjects = rule.subjects === undefined ? undefined : new Set(rule.subjects);
  }

  authorize(request: AuthenticatedRequest): AuthzDecision {
    const { principal } = request;
    if (principal.method === 'anonymous' && !this.allowAnyone) {
      return { allowed: false, error: new GatewayError('unauthenticated', { reason: 'route requires a credential' }) };
    }
    if (this.subjects !== undefined && !this.subjects.has(principal.subject)) {
      return { allowed: false, error: new GatewayError('forbidden', { reason: 'subject not on the route allow-list' }) };
    }
    return ALLOW;
  }
}
