// Times as the operator-facing views (the CLI's --json, the admin API) show them.

/** Epoch milliseconds as ISO 8601 UTC, or null. */
export function isoTime(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}
