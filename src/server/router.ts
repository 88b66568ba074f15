// Route table: maps (host, canonical path) to one route; longest path prefix wins, on segment boundaries only.
// Matching is case-sensitive and sees only the canonical path, never the query (AZ-08, AZ-10).
import type { Route } from '../pipeline/stage.js';
import { prefixMatches } from '../lib/path-prefix.js';

export function allowedMethods(methods: readonly string[]): ReadonlySet<string> {
  const set = new Set(methods);
  if (set.has('GET')) set.add('HEAD');
  return set;
}

export class Router {
  private readonly routes: readonly Route[];

  constructor(routes: readonly Route[]) {
    // Longest prefix first; among equal prefixes a host-specific route beats a host-less one.
    this.routes = [...routes].sort((a, b) => b.pathPrefix.length - a.pathPrefix.length || Number(b.host !== undefined) - Number(a.host !== undefined));
  }

  match(host: string, path: string): Route | undefined {
    for (const route of this.routes) {
      if (route.host !== undefined && route.host !== host) continue;
      if (prefixMatches(route.pathPrefix, path)) return route;
    }
    return undefined;
  }
}
