// What a configuration reload (SIGHUP) may change in a running gateway, and what only a restart can. A reload applies the
// route table and what it is built from; every other section is read once, at start (the listener, TLS settings, the
// stores, the audit log, the issuer). A reload that would change one of those is refused whole: never half applied.
import { isDeepStrictEqual } from 'node:util';
import type { Config } from './schema.js';

/** The sections a reload applies. */
export const RELOADABLE_SECTIONS: ReadonlySet<string> = new Set(['routes', 'upstreams', 'quotas', 'identity_headers']);

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * The settings that differ between two configurations but take effect only after a restart, named as precisely as a
 * section allows (`server.port`, `tls.min_version`, `issuer`); empty when the reload may go ahead.
 */
export function restartOnlyChanges(current: Config, next: Config): string[] {
  const changed: string[] = [];
  const sections = new Set([...Object.keys(current), ...Object.keys(next)]);
  for (const section of sections) {
    if (RELOADABLE_SECTIONS.has(section)) continue;
    const [before, after]: unknown[] = [(current as Record<string, unknown>)[section], (next as Record<string, unknown>)[section]];
    if (isDeepStrictEqual(before, after)) continue;
    if (!isObject(before) || !isObject(after)) {
      changed.push(section);
      continue;
    }
    for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
      if (!isDeepStrictEqual(before[key], after[key])) changed.push(`${section}.${key}`);
    }
  }
  return changed;
}
