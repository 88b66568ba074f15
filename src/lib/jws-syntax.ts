// The syntax of compact JWS (RFC 7515 §7.1) as the gateway reads it before any crypto — access tokens and DPoP proofs
// alike: the shape, the base64url segments, their JSON, and members read only as the object's own properties.

/** Compact serialization in base64url without padding: exactly three non-empty segments (JWT-12, JWT-13). */
export const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A segment whose length is 1 mod 4 is no base64url encoding at all; Buffer would silently drop the dangling character. */
export function hasUndecodableSegment(segments: readonly string[]): boolean {
  return segments.some((segment) => segment.length % 4 === 1);
}

/** What `jsonSegment` returns for a segment that is not UTF-8 JSON. */
export const NOT_JSON: unique symbol = Symbol('not JSON');

/** The JSON value a base64url segment encodes (strict UTF-8), or NOT_JSON. */
export function jsonSegment(segment: string): unknown {
  try {
    return JSON.parse(UTF8.decode(Buffer.from(segment, 'base64url')));
  } catch {
    return NOT_JSON;
  }
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads a member only when it is the object's own property (never something reached through a prototype: JWT-24). */
export function own(object: Readonly<Record<string, unknown>>, name: string): unknown {
  return Object.hasOwn(object, name) ? object[name] : undefined;
}
