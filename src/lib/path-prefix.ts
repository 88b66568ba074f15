// Route path prefixes, matched by whole segments: shared by the router and the config checks that reason about routes.

/** True when `path` is `prefix` or lies below it: `/api` matches `/api` and `/api/x`, never `/apix`. */
export function prefixMatches(prefix: string, path: string): boolean {
  if (!path.startsWith(prefix)) return false;
  return path.length === prefix.length || prefix.endsWith('/') || path.charCodeAt(prefix.length) === 0x2f;
}
