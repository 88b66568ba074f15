// The admin commands' argument parsers (a thrown InvalidArgumentError is a usage error: exit 64) and the handling of
// client ids that begin with "-".
import { type Command, InvalidArgumentError, type Option } from 'commander';
import {
  audienceProblem,
  CERTIFICATE_IDENTITY_PROBLEM,
  certificateIdentityOf,
  clientIdProblem,
  MAX_KEEP_OLD_MS,
  MIN_TOKEN_TTL_S,
  nameProblem,
  scopesProblem,
} from '../issuer/client-rules.js';
import { CERTIFICATE_TTL_S, normalSerial } from '../issuer/client-ca-store.js';
import { SIGNING_ALGORITHMS, type SigningAlgorithm } from '../issuer/signing-key.js';

export { MAX_NAME_CHARS, MIN_TOKEN_TTL_S } from '../issuer/client-rules.js';
export const DURATION_UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export const ID_HELP = `
A client id that begins with "-" can be given as it is, or after "--" (e.g. \`gatehouse clients show -- -nQnd…\`).`;

// ---- Argument parsers (a thrown InvalidArgumentError is a usage error: exit 64) ----

/** Throws the rule's complaint as a usage error (exit 64). */
function check(problem: string | undefined): void {
  if (problem !== undefined) throw new InvalidArgumentError(problem);
}

export function parseName(value: string): string {
  check(nameProblem(value));
  return value;
}

/** RFC 6749 §3.3 scope tokens, space-separated; a comma is legal in a scope but usually a mistaken separator (warned). */
export function parseScopes(value: string, warn: (message: string) => void): string[] {
  const scopes = [...new Set(value.split(' ').filter((scope) => scope !== ''))];
  check(scopesProblem(scopes));
  for (const scope of scopes) {
    if (scope.includes(','))
      warn(`scope ${JSON.stringify(scope)} contains a comma: scopes are separated by spaces (--scope "${scope.split(',').filter(Boolean).join(' ')}")`);
  }
  return scopes;
}

/** Repeatable; `previous` is undefined for the first one when the option has no default (`clients update`). */
export function collectAudience(value: string, previous: string[] | undefined): string[] {
  check(audienceProblem(value));
  const list = previous ?? [];
  return list.includes(value) ? list : [...list, value];
}

/**
 * `--token-ttl`: a duration (30s, 5m, 1h) in whole seconds, or `default` (the issuer's access_token_ttl_s). `default` stays
 * a word here: commander turns a parser's null into an empty string, so tokenLifetime() maps it to null later.
 */
export function parseTokenTtl(value: string): number | 'default' {
  if (value === 'default') return 'default';
  const ms = durationMs(value, 'smh');
  if (ms === undefined) throw new InvalidArgumentError('must be a duration with a unit s, m or h (e.g. 5m), or "default"');
  const seconds = ms / 1000;
  if (seconds < MIN_TOKEN_TTL_S) throw new InvalidArgumentError(`must be at least ${MIN_TOKEN_TTL_S}s`);
  return seconds;
}

export function parseClientId(value: string): string {
  check(clientIdProblem(value));
  return value;
}

/** `30s`, `15m`, `24h`, `7d` → milliseconds; positive, at most 30 days. */
export function parseDuration(value: string): number {
  const ms = durationMs(value, 'smhd');
  if (ms === undefined) throw new InvalidArgumentError('must be a positive whole number with a unit s, m, h or d, e.g. 24h');
  if (ms > MAX_KEEP_OLD_MS) throw new InvalidArgumentError('must be at most 30d');
  return ms;
}

/** A positive whole number with one of `units` (s, m, h, d) → milliseconds; undefined for anything else. */
export function durationMs(value: string, units: string): number | undefined {
  const match = /^([1-9][0-9]{0,7})([smhd])$/.exec(value);
  const unit = match?.[2];
  if (match === null || unit === undefined || !units.includes(unit)) return undefined;
  return Number(match[1]) * (DURATION_UNIT_MS[unit] ?? Number.NaN);
}

export function parseAlgorithm(value: string): SigningAlgorithm {
  const alg = SIGNING_ALGORITHMS.find((candidate) => candidate === value);
  if (alg === undefined) throw new InvalidArgumentError(`must be one of ${SIGNING_ALGORITHMS.join(', ')}`);
  return alg;
}

// ---- Client ids that begin with "-" ----

/** The shape of every id `generateClientId` ever issued: 16 random bytes in base64url (the last character holds 2 bits). */
const ISSUED_CLIENT_ID = /^[A-Za-z0-9_-]{21}[AQgw]$/;
/** The shape of every kid: an RFC 7638 thumbprint, a SHA-256 in base64url (the last character holds 4 bits). */
const KID = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;
/** The commands that take an id operand, and the shape of that id. */
const ID_OPERANDS: ReadonlyMap<string, { readonly commands: ReadonlySet<string>; readonly shape: RegExp }> = new Map([
  ['clients', { commands: new Set(['show', 'disable', 'enable', 'rotate-secret', 'remove', 'update']), shape: ISSUED_CLIENT_ID }],
  ['keys', { commands: new Set(['revoke']), shape: KID }],
]);

/**
 * Ids that begin with "-" would be read as options by the parser: client ids issued before ids were kept from starting
 * with "-", and signing-key ids (thumbprints), about one in 64 of either. For the commands that take such an id, the first
 * argument with exactly the id's shape that begins with "-" — and is not one of the command's option names, nor the value
 * of an option before it — is moved behind "--", where it can only be the id. That is safe: such an argument is no valid
 * option of these commands, and a random id named in the wrong store finds nothing (exit 66) rather than something else.
 * Returns argv unchanged when there is nothing to do.
 */
export function protectDashIds(program: Command, argv: readonly string[]): string[] {
  const [node = '', script = '', group, name, ...rest] = argv;
  const operand = group === undefined ? undefined : ID_OPERANDS.get(group);
  if (operand === undefined || name === undefined || !operand.commands.has(name)) return [...argv];
  const command = program.commands.find((c) => c.name() === group)?.commands.find((c) => c.name() === name);
  if (command === undefined) return [...argv];
  const options: readonly Option[] = command.options;
  const flags = new Set(options.flatMap((o) => [o.short, o.long]).filter((f): f is string => f !== undefined));
  const takesValue = new Set(
    options
      .filter((o) => o.required || o.optional)
      .flatMap((o) => [o.short, o.long])
      .filter((f): f is string => f !== undefined),
  );
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i] ?? '';
    if (arg === '--') return [...argv];
    if (takesValue.has(arg)) {
      i++;
      continue;
    }
    if (arg.startsWith('-') && !flags.has(arg) && operand.shape.test(arg)) {
      return [node, script, group ?? '', name, ...rest.slice(0, i), ...rest.slice(i + 1), '--', arg];
    }
  }
  return [...argv];
}

/** `--tls-client-auth`: the URI or DNS SAN a client certificate must carry, as the mtls authenticator reads identities. */
export function parseCertificateIdentity(value: string): string {
  const identity = certificateIdentityOf(value);
  if (identity === undefined) throw new InvalidArgumentError(CERTIFICATE_IDENTITY_PROBLEM);
  return identity;
}

/** `--ttl` of an issued client certificate: `30m` … `366d`. */
export function parseCertificateTtl(value: string): number {
  const ms = durationMs(value, 'smhd');
  if (ms === undefined) throw new InvalidArgumentError('must be a positive whole number with a unit s, m, h or d, e.g. 24h');
  if (ms < CERTIFICATE_TTL_S.min * 1000 || ms > CERTIFICATE_TTL_S.max * 1000) throw new InvalidArgumentError('must be between 5m and 366d');
  return ms / 1000;
}

/** A certificate serial as `certs list` and OpenSSL print it (hex, colons allowed), in the store's lower-case form. */
export function parseSerial(value: string): string {
  const serial = normalSerial(value);
  if (serial === undefined) throw new InvalidArgumentError('not a certificate serial (hexadecimal)');
  return serial;
}
