// The `none` authenticator: admits the caller as the anonymous principal on public routes. Always last in a route's list.
import type { Authenticator, AuthnResult, Principal } from '../pipeline/stage.js';

export const ANONYMOUS: Principal = Object.freeze({ subject: 'anonymous', method: 'anonymous', scopes: new Set<string>() });

export class AnonymousAuthenticator implements Authenticator {
  readonly id = 'none';
  authenticate(): AuthnResult {
    return { outcome: 'authenticated', principal: ANONYMOUS };
  }
}
