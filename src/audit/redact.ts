// Redaction of credentials in request targets before they reach the audit log or any log line (LOG-02, JWT-26, OA-02).
// A target is recorded for forensics, but a token or secret in a query string must never be stored in clear.

/** Query parameter names (compared case-insensitively, after percent-decoding) whose values are credentials. */
const CREDENTIAL_PARAMETERS = new Set([
  'access_token',
  'id_token',
  'refresh_token',
  'token',
  'client_secret',
  'client_assertion',
  'code',
  'password',
  'passwd',
  'secret',
  'api_key',
  'apikey',
  'key',
  'signature',
  'sig',
  'x-amz-signature',
  'x-goog-signature',
]);

function decodedName(name: string): string {
  try {
    return decodeURIComponent(name.replace(/\+/g, ' ')).toLowerCase();
  } catch {
    return name.toLowerCase();
  }
}

/** Returns `target` with the value of every credential-like query parameter replaced by `REDACTED`. */
export function redactTarget(target: string): string {
  const q = target.indexOf('?');
  if (q === -1) return target;
  const parts = target.slice(q + 1).split('&');
  let changed = false;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] ?? '';
    const eq = part.indexOf('=');
    const name = eq === -1 ? part : part.slice(0, eq);
    if (CREDENTIAL_PARAMETERS.has(decodedName(name))) {
      parts[i] = `${name}=REDACTED`;
      changed = true;
    }
  }
  return changed ? `${target.slice(0, q)}?${parts.join('&')}` : target;
}
