// The admin API's clients resource (issue #12 item 4): what `gatehouse clients …` does, as JSON over the admin listener,
// for CI pipelines and infrastructure-as-code tools. Each operation is the CLI's own (issuer/clients.ts), with the CLI's
// rules for every setting (issuer/client-rules.ts); each change is recorded in the gateway's audit chain as an `admin`
// record naming the admin's credential, in the same flush as the request's allow, before the answer leaves. A secret
// exists in clear only in the answer of a create or a rotation (never stored, never logged).
//
//   GET    /v1/clients?limit=&after=     a page of clients, by id
//   POST   /v1/clients                   register one (201, its secret once)
//   GET    /v1/clients/{id}              one client, its secrets' times
//   PATCH  /v1/clients/{id}              change settings
//   DELETE /v1/clients/{id}              remove it (204)
//   POST   /v1/clients/{id}/disable      end its tokens, stop it authenticating (idempotent)
//   POST   /v1/clients/{id}/enable       let it authenticate again (idempotent)
//   POST   /v1/clients/{id}/rotate-secret  a new secret; {"keep_old_for_s": N} keeps the old one N seconds
import { z } from 'zod';
import type { AdminAction, ApiActor, AuditSink } from '../audit/event.js';
import { GatewayError } from '../errors/catalogue.js';
import {
  audienceProblem,
  CERTIFICATE_IDENTITY_PROBLEM,
  certificateIdentityOf,
  clientIdProblem,
  MAX_AUDIENCES,
  MAX_KEEP_OLD_MS,
  nameProblem,
  scopesProblem,
  tokenTtlProblem,
} from '../issuer/client-rules.js';
import {
  addClient,
  addedFields,
  clientDetailView,
  clientView,
  disableClient,
  enableClient,
  isoTime,
  removeClient,
  rotateClientSecret,
  updateClient,
  type ClientSettings,
  type FieldChanges,
} from '../issuer/clients.js';
import type { AuthenticatedRequest, RequestBody, Service, ServiceResult } from '../pipeline/stage.js';
import { type ClientStore, StoreError } from '../store/contract.js';

export const CLIENTS_PATH = '/v1/clients';
/** A client's settings are a few hundred bytes; a body larger than this is not one. */
export const CLIENTS_BODY_LIMIT = 16 * 1024;
const DEFAULT_PAGE = 50;
const MAX_PAGE = 200;

export interface ClientsApiParts {
  readonly store: ClientStore;
  readonly audit: AuditSink;
  /** The issuer's access_token_ttl_s: the longest a client's own lifetime may be. */
  readonly issuerTokenTtlS: number;
  /** Re-reads the store into this gateway's issuer after a change, so its next token request sees it. */
  readonly changed: () => Promise<void>;
  readonly now: () => number;
}

/** The request body problems zod finds, as one `detail`: the first field and what is wrong with it. */
function invalid(error: z.ZodError): GatewayError {
  const issue = error.issues[0];
  const where = issue === undefined || issue.path.length === 0 ? 'body' : issue.path.map(String).join('.');
  return new GatewayError('invalid_request', { reason: 'admin API body', detail: `${where}: ${issue?.message ?? 'not acceptable'}` });
}

/** A zod refinement from a rule of client-rules.ts (a rule returns what is wrong, or undefined). */
function rule<T>(problem: (value: T) => string | undefined) {
  return (value: T, context: z.RefinementCtx): void => {
    const found = problem(value);
    if (found !== undefined) context.addIssue({ code: 'custom', message: found });
  };
}

const name = z.string().superRefine(rule(nameProblem));
const scopes = z
  .array(z.string())
  .transform((list) => [...new Set(list)])
  .superRefine(rule(scopesProblem));
const audiences = z
  .array(z.string().superRefine(rule(audienceProblem)))
  .max(MAX_AUDIENCES)
  .transform((list) => [...new Set(list)]);
const certificateSubject = z.string().transform((value, context) => {
  const identity = certificateIdentityOf(value);
  if (identity === undefined) {
    context.addIssue({ code: 'custom', message: CERTIFICATE_IDENTITY_PROBLEM });
    return z.NEVER;
  }
  return identity;
});

function settingsSchema(issuerTokenTtlS: number) {
  return {
    name,
    scopes,
    audiences,
    access_token_ttl_s: z
      .int()
      .superRefine(rule((seconds: number) => tokenTtlProblem(seconds, issuerTokenTtlS)))
      .nullable(),
    require_dpop: z.boolean(),
    tls_client_auth_subject: certificateSubject.nullable(),
  };
}

const rotation = z.strictObject({
  keep_old_for_s: z
    .int()
    .min(1)
    .max(MAX_KEEP_OLD_MS / 1000)
    .optional(),
});

type Target = { readonly kind: 'collection' } | { readonly kind: 'client'; readonly id: string; readonly action: string | undefined };

export class ClientsApi implements Service {
  readonly kind = 'service';
  private readonly create: z.ZodType<ClientSettings>;
  private readonly update: z.ZodType<Partial<ClientSettings>>;

  constructor(private readonly parts: ClientsApiParts) {
    const fields = settingsSchema(parts.issuerTokenTtlS);
    this.create = z
      .strictObject({
        name: fields.name,
        scopes: fields.scopes,
        audiences: fields.audiences.default([]),
        access_token_ttl_s: fields.access_token_ttl_s.default(null),
        require_dpop: fields.require_dpop.default(false),
        tls_client_auth_subject: fields.tls_client_auth_subject.default(null),
      })
      .transform((body) => ({
        name: body.name,
        scopes: body.scopes,
        audiences: body.audiences,
        accessTokenTtlS: body.access_token_ttl_s,
        requireDpop: body.require_dpop,
        tlsClientAuthSubject: body.tls_client_auth_subject,
      }));
    this.update = z
      .strictObject({
        name: fields.name.optional(),
        scopes: fields.scopes.optional(),
        audiences: fields.audiences.optional(),
        access_token_ttl_s: fields.access_token_ttl_s.optional(),
        require_dpop: fields.require_dpop.optional(),
        tls_client_auth_subject: certificateSubject.optional(),
      })
      .refine((body) => Object.keys(body).length > 0, { message: 'give at least one setting to change' })
      .transform((body) => ({
        ...(body.name !== undefined ? { name: body.name } : {}),
        ...(body.scopes !== undefined ? { scopes: body.scopes } : {}),
        ...(body.audiences !== undefined ? { audiences: body.audiences } : {}),
        ...(body.access_token_ttl_s !== undefined ? { accessTokenTtlS: body.access_token_ttl_s } : {}),
        ...(body.require_dpop !== undefined ? { requireDpop: body.require_dpop } : {}),
        ...(body.tls_client_auth_subject !== undefined ? { tlsClientAuthSubject: body.tls_client_auth_subject } : {}),
      }));
  }

  async serve(request: AuthenticatedRequest, received: RequestBody): Promise<ServiceResult> {
    const body = new JsonBody(received);
    let result: ServiceResult;
    try {
      result = await this.dispatch(request, body);
    } catch (error) {
      if (error instanceof GatewayError) result = refused(error);
      else if (error instanceof StoreError && error.code === 'not_found') result = refused(noSuchClient());
      else if (error instanceof StoreError && error.code === 'unavailable') {
        result = refused(new GatewayError('service_unavailable', { reason: 'credential store unavailable', headers: { 'retry-after': '1' } }));
      } else throw error;
    }
    // A refusal made before the body was read ends an HTTP/1.1 connection (the pipeline closes it); one made after does not.
    return result.outcome === 'refused' ? { ...result, unreadBody: !body.consumed } : result;
  }

  private async dispatch(request: AuthenticatedRequest, body: JsonBody): Promise<ServiceResult> {
    const target = targetOf(request.path);
    const method = request.method === 'HEAD' ? 'GET' : request.method;
    if (target === undefined) return refused(new GatewayError('no_such_resource', { reason: 'no such admin resource' }));
    if (target.kind === 'collection') {
      if (method === 'GET') return this.list(request.query);
      if (method === 'POST') return this.add(request, await body.parse(this.create));
      return notAllowed('GET, HEAD, POST');
    }
    const { id, action } = target;
    if (clientIdProblem(id) !== undefined) return refused(noSuchClient());
    if (action === undefined) {
      if (method === 'GET') return this.show(id);
      if (method === 'PATCH') return this.change(request, id, await body.parse(this.update));
      if (method === 'DELETE') return this.remove(request, id);
      return notAllowed('GET, HEAD, PATCH, DELETE');
    }
    if (action !== 'disable' && action !== 'enable' && action !== 'rotate-secret')
      return refused(new GatewayError('no_such_resource', { reason: 'no such action' }));
    if (method !== 'POST') return notAllowed('POST');
    if (action === 'rotate-secret') return this.rotate(request, id, await body.parse(rotation, true));
    await body.parse(z.strictObject({}), true);
    return this.toggle(request, id, action);
  }

  private async list(query: string): Promise<ServiceResult> {
    const params = new URLSearchParams(query);
    for (const key of params.keys()) {
      if (key !== 'limit' && key !== 'after') return refused(badQuery(`${key}: not a parameter of this list (limit, after)`));
    }
    const limitText = params.get('limit');
    const limit = limitText === null ? DEFAULT_PAGE : Number(limitText);
    if (!/^\d{1,3}$/.test(limitText ?? '1') || limit < 1 || limit > MAX_PAGE) return refused(badQuery(`limit: a whole number from 1 to ${MAX_PAGE}`));
    const after = params.get('after');
    if (after !== null && clientIdProblem(after) !== undefined) return refused(badQuery('after: a client id'));
    const now = this.parts.now();
    const all = [...(await this.parts.store.listClients())].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const rest = after === null ? all : all.filter((client) => client.id > after);
    const page = rest.slice(0, limit);
    const last = page.at(-1);
    return answer(200, { clients: page.map((client) => clientView(client, now)), next_after: rest.length > limit && last !== undefined ? last.id : null });
  }

  private async show(id: string): Promise<ServiceResult> {
    const client = await this.parts.store.getClient(id);
    if (client === undefined) return refused(noSuchClient());
    return answer(200, clientDetailView(client, this.parts.now()));
  }

  private async add(request: AuthenticatedRequest, settings: ClientSettings): Promise<ServiceResult> {
    this.auditable();
    const { client, secret } = await addClient(this.parts.store, settings, this.parts.now());
    this.record(request, 'client.add', client.id, addedFields(client));
    await this.parts.changed();
    const view = { ...clientView(client, this.parts.now()), ...(secret !== undefined ? { client_secret: secret } : {}) };
    return answer(201, view, { location: `${CLIENTS_PATH}/${client.id}` });
  }

  private async change(request: AuthenticatedRequest, id: string, settings: Partial<ClientSettings>): Promise<ServiceResult> {
    this.auditable();
    const { client, changes } = await updateClient(this.parts.store, id, settings);
    await this.recorded(request, 'client.update', id, changes);
    return answer(200, { client: clientView(client, this.parts.now()), changes });
  }

  private async toggle(request: AuthenticatedRequest, id: string, action: 'disable' | 'enable'): Promise<ServiceResult> {
    this.auditable();
    const { client, changes } = action === 'disable' ? await disableClient(this.parts.store, id, this.parts.now()) : await enableClient(this.parts.store, id);
    await this.recorded(request, action === 'disable' ? 'client.disable' : 'client.enable', id, changes);
    return answer(200, { client: clientView(client, this.parts.now()), changed: Object.keys(changes).length > 0 });
  }

  private async rotate(request: AuthenticatedRequest, id: string, body: { keep_old_for_s?: number | undefined }): Promise<ServiceResult> {
    this.auditable();
    const keepOldMs = body.keep_old_for_s === undefined ? undefined : body.keep_old_for_s * 1000;
    const { secret, oldSecretExpiresAt } = await rotateClientSecret(this.parts.store, id, keepOldMs, this.parts.now());
    this.record(request, 'client.rotate_secret', id, { old_secret_expires_at: isoTime(oldSecretExpiresAt) });
    await this.parts.changed();
    return answer(200, { client_id: id, client_secret: secret, old_secret_expires_at: isoTime(oldSecretExpiresAt) });
  }

  private async remove(request: AuthenticatedRequest, id: string): Promise<ServiceResult> {
    this.auditable();
    await removeClient(this.parts.store, id);
    this.record(request, 'client.remove', id, {});
    await this.parts.changed();
    return { outcome: 'answered', answer: { status: 204, body: undefined } };
  }

  /** No change is made that could not be recorded: with the audit log unable to take records, 503 before touching the store. */
  private auditable(): void {
    if (!this.parts.audit.ready) throw new GatewayError('service_unavailable', { reason: 'audit unavailable', headers: { 'retry-after': '1' } });
  }

  /** Records a change that changed something (an idempotent no-op records nothing), then lets this gateway see it. */
  private async recorded(request: AuthenticatedRequest, action: AdminAction, id: string, changes: FieldChanges): Promise<void> {
    if (Object.keys(changes).length === 0) return;
    this.record(request, action, id, changes);
    await this.parts.changed();
  }

  private record(request: AuthenticatedRequest, action: AdminAction, target: string, changes: Readonly<Record<string, unknown>>): void {
    this.parts.audit.admin({ action, target, actor: actorOf(request), changes });
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

/** `/v1/clients` → the collection; `/v1/clients/{id}` and `/v1/clients/{id}/{action}` → a client; anything deeper → none. */
function targetOf(path: string): Target | undefined {
  const rest = path.slice(CLIENTS_PATH.length);
  if (rest === '' || rest === '/') return { kind: 'collection' };
  const segments = rest.slice(1).split('/');
  const [id, action, ...beyond] = segments;
  if (id === undefined || id === '' || beyond.length > 0 || action === '') return undefined;
  return { kind: 'client', id: decodeURIComponent(id), action };
}

/** A request body read at most once, as JSON: `application/json` only (415 otherwise), within CLIENTS_BODY_LIMIT. */
class JsonBody {
  consumed = false;

  constructor(private readonly body: RequestBody) {}

  /** `optional`: an empty body is `{}` (the actions take no settings, or optional ones). */
  async parse<T>(schema: z.ZodType<T>, optional = false): Promise<T> {
    const bytes = await this.body.read(CLIENTS_BODY_LIMIT);
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

function answer(status: number, body: unknown, headers?: Record<string, string>): ServiceResult {
  return { outcome: 'answered', answer: { status, body, ...(headers !== undefined ? { headers } : {}) } };
}

function refused(error: GatewayError): ServiceResult {
  return { outcome: 'refused', error };
}

function notAllowed(allow: string): ServiceResult {
  return refused(new GatewayError('method_not_allowed', { reason: 'admin API method', headers: { allow } }));
}

function noSuchClient(): GatewayError {
  return new GatewayError('no_such_resource', { reason: 'no such client' });
}

function badQuery(detail: string): GatewayError {
  return new GatewayError('invalid_request', { reason: 'admin API query', detail });
}
