// Route configs for tests, built instead of written out: `route(id, prefix, options)` says only what differs from a
// public GET route to the echo service. Tests of the config schema itself keep their literal (often invalid) routes.
import type { ConfigInput } from '../../src/config/schema.js';

export type RouteInput = ConfigInput['routes'][number];
type ProxyOptions = Extract<RouteInput['handler'], { proxy: unknown }>['proxy'];

export interface RouteOptions extends Partial<Omit<RouteInput, 'id' | 'match' | 'handler'>> {
  /** Default: GET. */
  readonly methods?: RouteInput['match']['methods'];
  readonly host?: string;
  /** Proxy to this upstream (with `proxy` options); default: the echo service. */
  readonly to?: string;
  readonly proxy?: Omit<ProxyOptions, 'upstream'>;
}

/**
 * A route matching `pathPrefix`: `authn` defaults to none, and `authz` to what the authenticators imply (anyone for
 * none, authenticated otherwise); the handler is the echo service unless `to` names an upstream.
 */
export function route(id: string, pathPrefix: string, options: RouteOptions = {}): RouteInput {
  const { methods = ['GET'], host, to, proxy, authn = ['none'], authz, ...rest } = options;
  return {
    id,
    match: { path_prefix: pathPrefix, methods, ...(host === undefined ? {} : { host }) },
    authn,
    authz: authz ?? { allow: authn.includes('none') ? 'anyone' : 'authenticated' },
    handler: to === undefined ? { service: 'echo' } : { proxy: { upstream: to, ...proxy } },
    ...rest,
  };
}
