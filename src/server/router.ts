// Route table: maps (host, canonical path) to one route; longest path prefix wins, on segment boundaries only.
// Matching is case-sensitive and sees only the canonical path, never the query (AZ-08, AZ-10).
import type { Authenticator, Authorizer, Handler, QuotaPolicy } from '../pipeline/stage.js';

/** A route compiled from config: the pipeline's data for requests it matches. */
export interface Route {
  readonly id: string;
  readonly pathPrefix: string;
  readonly host: string | undefined;
  /** Allowed methods; HEAD is included whenever GET is (it gets GET's authorization, AZ-11). */
  readonly methods: ReadonlySet<string>;
  /** Value of the Allow header for 405 answers. */
  readonly allowHeader: string;
  readonly bodyLimitBytes: number;
  readonly authenticators: readonly Authenticator[];
  /** WWW-Authenticate of a 401 when no credential was presented (`Bearer realm=…` on bearer routes), if any. */
  readonly challenge: string | undefined;
  readonly authorizer: Authorizer;
  readonly quota: QuotaPolicy | undefined;
  readonly handler: Handler;
  /**
   * The handler records its own decision (the OAuth endpoints, which know the client): the pipeline then writes no
   * anonymous `allow` before it, and records a `deny` if the handler fails.
   */
  readonly selfAudited: boolean;
}

export function allowedMethods(methods: readonly string[]): ReadonlySet<string> {
  const set = new Set(methods);
  if (set.has('GET')) set.add('HEAD');
  return set;
}

/** True when `path` is `prefix` or lies below it: `/api` matches `/api` and `/api/x`, never `/apix`. */
export function prefixMatches(prefix: string, path: string): boolean {
  if (!path.startsWith(prefix)) return false;
  return path.length === prefix.length || prefix.endsWith('/') || path.charCodeAt(prefix.length) === 0x2f;
}

export class Router {
  private readonly routes: readonly Route[];

  constructor(routes: readonly Route[]) {
    // Longest prefix first; among equal prefixes a host-specific route beats a host-less one.
    this.routes = [...routes].sort(
      (a, b) => b.pathPrefix.length - a.pathPrefix.length || Number(b.host !== undefined) - Number(a.host !== undefined),
    );
  }

  match(host: string, path: string): Route | undefined {
    for (const route of this.routes) {
      if (route.host !== undefined && route.host !== host) continue;
      if (prefixMatches(route.pathPrefix, path)) return route;
    }
    return undefined;
  }
}
