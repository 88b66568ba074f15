// What every resource of the admin API shares: JSON bodies read once and checked with zod, RFC 9457 refusals (with a
// `detail` naming the field an admin got wrong), paths split into their segments, and the one way a change is made:
// refused before anything is touched while the audit log cannot take records, then recorded as an `admin` record naming
// the admin's credential, then shown to this gateway's issuer.
import type { z } from 'zod';
import type { AdminAction, ApiActor, AuditSink } from '../audit/event.js';
import { GatewayError } from '../errors/catalogue.js';
import type { AuthenticatedRequest, RequestBody, Service, ServiceResult } from '../pipeline/stage.js';
import { StoreError } from '../store/contract.js';

/** An admin API body is a few hundred bytes of settings; a larger one is not one. */
export const API_BODY_LIMIT = 16 * 1024;

export interface ApiParts {
  readonly audit: AuditSink;
  /** Re-reads the store into this gateway's issuer after a change, so its next request sees it. */
  readonly changed: () => Promise<void>;
  readonly now: () => number;
}

/** A request body read at most once, as JSON: `application/json` only (415 otherwise), within API_BODY_LIMIT. */
export class JsonBody {
  consumed = false;

  constructor(private readonly body: RequestBody) {}

  /** `optional`: an empty body is `{}` (actions that take no settings, or optional ones). */
  async parse<T>(schema: z.ZodType<T>, optional = false): Promise<T> {
    const bytes = await this.body.read(API_BODY_LIMIT);
    this.consumed = bytes !== 'too_large';
    if (bytes === 'too_large') throw new GatewayError('payload_too_large', { reason: 'admin API body over its limit' });
    if (bytes === 'gone') throw new GatewayError('bad_request', { reason: 'admin API body incomplete' });
    let value: unknown = {};
    if (bytes.length > 0 || !optional) {
      const type = (this.body.header('content-type') ?? '').split(';')[0]?.trim().toLowerCase();
      if (type !== 'application/json') throw new GatewayError('unsupported_media_type', { reason: 'admin API body not application/json' });
      try {
        value = JSON.parse(bytes.toString('utf8'));
      } catch {
        throw new GatewayError('invalid_request', { reason: 'admin API body not JSON', detail: 'body: not a JSON document' });
      }
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) throw invalid(parsed.error);
    return parsed.data;
  }
}

/** A zod refinement from a rule of issuer/client-rules.ts (a rule returns what is wrong, or undefined). */
export function rule<T>(problem: (value: T) => string | undefined) {
  return (value: T, context: z.RefinementCtx): void => {
    const found = problem(value);
    if (found !== undefined) context.addIssue({ code: 'custom', message: found });
  };
}

/** The first problem zod found, as one `detail`: the field and what is wrong with it. */
function invalid(error: z.ZodError): GatewayError {
  const issue = error.issues[0];
  const where = issue === undefined || issue.path.length === 0 ? 'body' : issue.path.map(String).join('.');
  return new GatewayError('invalid_request', { reason: 'admin API body', detail: `${where}: ${issue?.message ?? 'not acceptable'}` });
}

/**
 * A resource of the admin API: `handle` answers or throws a GatewayError (a refusal); a store's not_found is the
 * resource's `missing`, its unavailable a 503. A refusal made before the body was read ends an HTTP/1.1 connection.
 */
export abstract class ApiResource implements Service {
  readonly kind = 'service';

  constructor(
    protected readonly parts: ApiParts,
    /** What a store's not_found means here ("no such client"). */
    private readonly missing: string,
  ) {}

  protected abstract handle(request: AuthenticatedRequest, body: JsonBody): Promise<ServiceResult>;

  async serve(request: AuthenticatedRequest, received: RequestBody): Promise<ServiceResult> {
    const body = new JsonBody(received);
    let result: ServiceResult;
    try {
      result = await this.handle(request, body);
    } catch (error) {
      if (error instanceof GatewayError) result = refused(error);
      else if (error instanceof StoreError && error.code === 'not_found') result = refused(noSuch(this.missing));
      else if (error instanceof StoreError && error.code === 'unavailable') {
        result = refused(new GatewayError('service_unavailable', { reason: 'credential store unavailable', headers: { 'retry-after': '1' } }));
      } else throw error;
    }
    return result.outcome === 'refused' ? { ...result, unreadBody: !body.consumed } : result;
  }

  /** No change is made that could not be recorded: with the audit log unable to take records, 503 before touching the store. */
  protected auditable(): void {
    if (!this.parts.audit.ready) throw new GatewayError('service_unavailable', { reason: 'audit unavailable', headers: { 'retry-after': '1' } });
  }

  /** Records a change in the gateway's chain (an empty `changes` of an idempotent no-op records nothing), then shows it to the issuer. */
  protected async recorded(
    request: AuthenticatedRequest,
    action: AdminAction,
    target: string,
    changes: Readonly<Record<string, unknown>>,
    always = false,
  ): Promise<void> {
    if (!always && Object.keys(changes).length === 0) return;
    this.parts.audit.admin({ action, target, actor: actorOf(request), changes });
    await this.parts.changed();
  }
}

/** The admin's credential as the admin record names it: identity and fingerprints, never the credential. */
function actorOf(request: AuthenticatedRequest): ApiActor {
  const { principal } = request;
  return {
    via: 'api',
    subject: principal.subject,
    auth_method: principal.method,
    cert_thumbprint: principal.certificateThumbprint ?? null,
    client_id: principal.clientId ?? null,
    jti: principal.tokenId ?? null,
    request_id: request.id,
    client_ip: request.connection.clientAddress,
  };
}

/**
 * The segments of `path` under `prefix`: [] for the collection itself, [id] or [id, action] below it; undefined for an
 * empty segment or anything deeper. Segments are percent-decoded (the edge let only canonical paths through).
 */
export function segmentsUnder(prefix: string, path: string): readonly string[] | undefined {
  const rest = path.slice(prefix.length);
  if (rest === '' || rest === '/') return [];
  const segments = rest.slice(1).split('/');
  if (segments.length > 2 || segments.some((segment) => segment === '')) return undefined;
  return segments.map((segment) => decodeURIComponent(segment));
}

export function answer(status: number, body: unknown, headers?: Record<string, string>): ServiceResult {
  return { outcome: 'answered', answer: { status, body, ...(headers !== undefined ? { headers } : {}) } };
}

export function refused(error: GatewayError): ServiceResult {
  return { outcome: 'refused', error };
}

export function notAllowed(allow: string): ServiceResult {
  return refused(new GatewayError('method_not_allowed', { reason: 'admin API method', headers: { allow } }));
}

export function noSuch(what: string): GatewayError {
  return new GatewayError('no_such_resource', { reason: what });
}

export function badQuery(detail: string): GatewayError {
  return new GatewayError('invalid_request', { reason: 'admin API query', detail });
}

const DEFAULT_PAGE = 50;
export const MAX_PAGE = 200;

/** What a list's query asked for: `limit` (1–MAX_PAGE, default 50), `after` (a key of the previous page), and filters. */
export interface PageQuery {
  readonly limit: number;
  readonly after: string | null;
  readonly filters: ReadonlyMap<string, string>;
}

/**
 * Parses a list's query string: `limit`, `after` (checked by `isKey`) and the `filters` it names; anything else, or a
 * repeated parameter, is a 400 naming it.
 */
export function pageQuery(query: string, isKey: (value: string) => boolean, filters: readonly string[] = []): PageQuery {
  const params = new URLSearchParams(query);
  const seen = new Set<string>();
  for (const key of params.keys()) {
    if (key !== 'limit' && key !== 'after' && !filters.includes(key))
      throw badQuery(`${key}: not a parameter of this list (${['limit', 'after', ...filters].join(', ')})`);
    if (seen.has(key)) throw badQuery(`${key}: given twice`);
    seen.add(key);
  }
  const limitText = params.get('limit');
  if (limitText !== null && !/^\d{1,3}$/.test(limitText)) throw badQuery(`limit: a whole number from 1 to ${MAX_PAGE}`);
  const limit = limitText === null ? DEFAULT_PAGE : Number(limitText);
  if (limit < 1 || limit > MAX_PAGE) throw badQuery(`limit: a whole number from 1 to ${MAX_PAGE}`);
  const after = params.get('after');
  if (after !== null && !isKey(after)) throw badQuery('after: not a key of this list');
  return { limit, after, filters: new Map(filters.flatMap((name) => (params.has(name) ? [[name, params.get(name) ?? '']] : []))) };
}

/** One page of `items` in the order of their keys: the items, and the `after` of the next page (null on the last). */
export function pageOf<T>(
  items: readonly T[],
  keyOf: (item: T) => string,
  query: PageQuery,
): { readonly items: readonly T[]; readonly nextAfter: string | null } {
  const ordered = [...items].sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : keyOf(a) > keyOf(b) ? 1 : 0));
  const { after } = query;
  const rest = after === null ? ordered : ordered.filter((item) => keyOf(item) > after);
  const page = rest.slice(0, query.limit);
  const last = page.at(-1);
  return { items: page, nextAfter: rest.length > query.limit && last !== undefined ? keyOf(last) : null };
}

/** The request's method, HEAD answered as GET. */
export function methodOf(request: AuthenticatedRequest): string {
  return request.method === 'HEAD' ? 'GET' : request.method;
}
