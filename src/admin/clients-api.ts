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
import type { GatewayError } from '../errors/catalogue.js';
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
  removeClient,
  rotateClientSecret,
  updateClient,
  type ClientSettings,
} from '../issuer/clients.js';
import type { AuthenticatedRequest, ServiceResult } from '../pipeline/stage.js';
import type { ClientStore } from '../store/contract.js';
import { isoTime } from '../lib/iso-time.js';
import { answer, ApiResource, type ApiParts, type JsonBody, methodOf, noSuch, notAllowed, pageOf, pageQuery, refused, rule, segmentsUnder } from './api.js';

export const CLIENTS_PATH = '/v1/clients';

export interface ClientsApiParts extends ApiParts {
  readonly store: ClientStore;
  /** The issuer's access_token_ttl_s: the longest a client's own lifetime may be. */
  readonly issuerTokenTtlS: number;
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

export class ClientsApi extends ApiResource {
  private readonly create: z.ZodType<ClientSettings>;
  private readonly update: z.ZodType<Partial<ClientSettings>>;

  constructor(private readonly clients: ClientsApiParts) {
    super(clients, 'no such client');
    const fields = settingsSchema(clients.issuerTokenTtlS);
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

  protected async handle(request: AuthenticatedRequest, body: JsonBody): Promise<ServiceResult> {
    const segments = segmentsUnder(CLIENTS_PATH, request.path);
    const method = methodOf(request);
    if (segments === undefined) return refused(noSuch('no such admin resource'));
    const [id, action] = segments;
    if (id === undefined) {
      if (method === 'GET') return this.list(request.query);
      if (method === 'POST') return this.add(request, await body.parse(this.create));
      return notAllowed('GET, HEAD, POST');
    }
    if (clientIdProblem(id) !== undefined) return refused(noSuchClient());
    if (action === undefined) {
      if (method === 'GET') return this.show(id);
      if (method === 'PATCH') return this.change(request, id, await body.parse(this.update));
      if (method === 'DELETE') return this.remove(request, id);
      return notAllowed('GET, HEAD, PATCH, DELETE');
    }
    if (action !== 'disable' && action !== 'enable' && action !== 'rotate-secret') return refused(noSuch('no such action'));
    if (method !== 'POST') return notAllowed('POST');
    if (action === 'rotate-secret') return this.rotate(request, id, await body.parse(rotation, true));
    await body.parse(z.strictObject({}), true);
    return this.toggle(request, id, action);
  }

  private async list(query: string): Promise<ServiceResult> {
    const asked = pageQuery(query, (value) => clientIdProblem(value) === undefined);
    const now = this.parts.now();
    const page = pageOf(await this.clients.store.listClients(), (client) => client.id, asked);
    return answer(200, { clients: page.items.map((client) => clientView(client, now)), next_after: page.nextAfter });
  }

  private async show(id: string): Promise<ServiceResult> {
    const client = await this.clients.store.getClient(id);
    if (client === undefined) return refused(noSuchClient());
    return answer(200, clientDetailView(client, this.parts.now()));
  }

  private async add(request: AuthenticatedRequest, settings: ClientSettings): Promise<ServiceResult> {
    this.auditable();
    const { client, secret } = await addClient(this.clients.store, settings, this.parts.now());
    await this.recorded(request, 'client.add', client.id, addedFields(client), true);
    const view = { ...clientView(client, this.parts.now()), ...(secret !== undefined ? { client_secret: secret } : {}) };
    return answer(201, view, { location: `${CLIENTS_PATH}/${client.id}` });
  }

  private async change(request: AuthenticatedRequest, id: string, settings: Partial<ClientSettings>): Promise<ServiceResult> {
    this.auditable();
    const { client, changes } = await updateClient(this.clients.store, id, settings);
    await this.recorded(request, 'client.update', id, changes);
    return answer(200, { client: clientView(client, this.parts.now()), changes });
  }

  private async toggle(request: AuthenticatedRequest, id: string, action: 'disable' | 'enable'): Promise<ServiceResult> {
    this.auditable();
    const { client, changes } =
      action === 'disable' ? await disableClient(this.clients.store, id, this.parts.now()) : await enableClient(this.clients.store, id);
    await this.recorded(request, action === 'disable' ? 'client.disable' : 'client.enable', id, changes);
    return answer(200, { client: clientView(client, this.parts.now()), changed: Object.keys(changes).length > 0 });
  }

  private async rotate(request: AuthenticatedRequest, id: string, body: { keep_old_for_s?: number | undefined }): Promise<ServiceResult> {
    this.auditable();
    const keepOldMs = body.keep_old_for_s === undefined ? undefined : body.keep_old_for_s * 1000;
    const { secret, oldSecretExpiresAt } = await rotateClientSecret(this.clients.store, id, keepOldMs, this.parts.now());
    await this.recorded(request, 'client.rotate_secret', id, { old_secret_expires_at: isoTime(oldSecretExpiresAt) }, true);
    return answer(200, { client_id: id, client_secret: secret, old_secret_expires_at: isoTime(oldSecretExpiresAt) });
  }

  private async remove(request: AuthenticatedRequest, id: string): Promise<ServiceResult> {
    this.auditable();
    await removeClient(this.clients.store, id);
    await this.recorded(request, 'client.remove', id, {}, true);
    return { outcome: 'answered', answer: { status: 204, body: undefined } };
  }
}

function noSuchClient(): GatewayError {
  return noSuch('no such client');
}
