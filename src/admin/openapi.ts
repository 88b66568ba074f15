// The admin API's OpenAPI 3.1 document, served at GET /openapi.json on the admin listener. A test checks every answer the
// API really gives against these schemas (test/admin/api.test.ts), so the document cannot drift from the code unnoticed.
import { CLIENTS_BODY_LIMIT } from './clients-api.js';

const json = (schema: string) => ({ 'application/json': { schema: { $ref: `#/components/schemas/${schema}` } } });
const problem = (description: string) => ({ description, content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } });
const ok = (description: string, schema: string) => ({ description, content: json(schema) });

const clientId = { name: 'id', in: 'path', required: true, schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' } } as const;
const refusals = {
  '401': problem('No credential, or one that is not acceptable'),
  '403': problem('The credential is not an administrator'),
  '503': problem('The credential store or the audit log is unavailable: nothing was changed'),
} as const;
const changeRefusals = {
  ...refusals,
  '400': problem('The body is not acceptable; `detail` names the field'),
  '404': problem('No client with this id'),
  '413': problem(`The body is over ${CLIENTS_BODY_LIMIT} bytes`),
  '415': problem('The body is not application/json'),
} as const;

const nullableTime = { type: ['string', 'null'], format: 'date-time' } as const;
const settings = {
  name: { type: 'string', minLength: 1, maxLength: 400, description: '1-100 printable characters' },
  scopes: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 64, description: 'RFC 6749 scope tokens' },
  audiences: { type: 'array', items: { type: 'string', format: 'uri' }, maxItems: 32 },
  access_token_ttl_s: { type: ['integer', 'null'], minimum: 30, description: "seconds; null: the issuer's access_token_ttl_s" },
  require_dpop: { type: 'boolean' },
  tls_client_auth_subject: { type: ['string', 'null'], description: 'RFC 8705 tls_client_auth: the URI or DNS SAN of its certificate; null: a client secret' },
} as const;

export const ADMIN_OPENAPI = {
  openapi: '3.1.0',
  info: {
    title: 'Gatehouse admin API',
    version: '1',
    description:
      'What `gatehouse clients` does, over the admin listener. Every call needs an admin credential: a client certificate ' +
      'with a configured admin identity, or a token of this gateway with the scope gatehouse:admin. Every change is ' +
      'recorded in the audit chain with the admin who made it. Refusals are RFC 9457 problem documents.',
  },
  security: [{ adminCertificate: [] }, { adminToken: [] }],
  paths: {
    '/v1/clients': {
      get: {
        operationId: 'listClients',
        summary: 'A page of clients, ordered by id',
        parameters: [
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 200, default: 50 } },
          { name: 'after', in: 'query', description: 'the `next_after` of the previous page', schema: { type: 'string' } },
        ],
        responses: { '200': ok('A page of clients', 'ClientPage'), '400': problem('A query parameter is not acceptable'), ...refusals },
      },
      post: {
        operationId: 'addClient',
        summary: 'Register a client; its secret is in this answer only',
        requestBody: { required: true, content: json('NewClient') },
        responses: { '201': ok('The client, with its secret (unless it authenticates with a certificate)', 'NewClientCreated'), ...changeRefusals },
      },
    },
    '/v1/clients/{id}': {
      parameters: [clientId],
      get: {
        operationId: 'getClient',
        summary: "One client and its secrets' creation and expiry times",
        responses: { '200': ok('The client', 'ClientDetail'), '404': problem('No client with this id'), ...refusals },
      },
      patch: {
        operationId: 'updateClient',
        summary: "Change a client's settings",
        requestBody: { required: true, content: json('ClientUpdate') },
        responses: { '200': ok('The client and what changed', 'ClientChanged'), ...changeRefusals },
      },
      delete: {
        operationId: 'removeClient',
        summary: 'Remove a client and its secrets; its tokens stop working',
        responses: { '204': { description: 'Removed' }, '404': problem('No client with this id'), ...refusals },
      },
    },
    '/v1/clients/{id}/disable': {
      parameters: [clientId],
      post: {
        operationId: 'disableClient',
        summary: 'Stop a client authenticating and end every token issued to it so far (idempotent)',
        responses: { '200': ok('The client; `changed` is false when it was already disabled', 'ClientToggled'), ...changeRefusals },
      },
    },
    '/v1/clients/{id}/enable': {
      parameters: [clientId],
      post: {
        operationId: 'enableClient',
        summary: 'Let a disabled client authenticate again; no token issued before is accepted (idempotent)',
        responses: { '200': ok('The client; `changed` is false when it was already enabled', 'ClientToggled'), ...changeRefusals },
      },
    },
    '/v1/clients/{id}/rotate-secret': {
      parameters: [clientId],
      post: {
        operationId: 'rotateClientSecret',
        summary: 'A new secret; the old one ends now, or after keep_old_for_s',
        requestBody: { required: false, content: json('SecretRotation') },
        responses: { '200': ok('The new secret (in this answer only)', 'SecretRotated'), ...changeRefusals },
      },
    },
  },
  components: {
    securitySchemes: {
      adminCertificate: { type: 'mutualTLS', description: 'A client certificate whose identity is in admin.subjects' },
      adminToken: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'An access token of this gateway with gatehouse:admin' },
    },
    schemas: {
      ClientFields: {
        type: 'object',
        required: [
          'client_id',
          'name',
          'enabled',
          'scopes',
          'audiences',
          'access_token_ttl_s',
          'require_dpop',
          'tls_client_auth_subject',
          'tokens_not_before',
          'active_secrets',
          'created_at',
          'updated_at',
        ],
        properties: {
          client_id: { type: 'string' },
          ...settings,
          enabled: { type: 'boolean' },
          tokens_not_before: { ...nullableTime, description: 'tokens issued before this are refused (set by disable and enable)' },
          active_secrets: { type: 'integer', minimum: 0 },
          created_at: nullableTime,
          updated_at: nullableTime,
        },
      },
      Client: { allOf: [{ $ref: '#/components/schemas/ClientFields' }], unevaluatedProperties: false },
      ClientDetail: {
        allOf: [{ $ref: '#/components/schemas/ClientFields' }],
        type: 'object',
        unevaluatedProperties: false,
        required: ['secrets'],
        properties: {
          secrets: {
            type: 'array',
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['created_at', 'expires_at', 'active'],
              properties: { created_at: nullableTime, expires_at: nullableTime, active: { type: 'boolean' } },
            },
          },
        },
      },
      ClientPage: {
        type: 'object',
        additionalProperties: false,
        required: ['clients', 'next_after'],
        properties: {
          clients: { type: 'array', items: { $ref: '#/components/schemas/Client' } },
          next_after: { type: ['string', 'null'], description: 'pass as `after` for the next page; null on the last' },
        },
      },
      NewClient: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'scopes'],
        properties: settings,
      },
      NewClientCreated: {
        allOf: [{ $ref: '#/components/schemas/ClientFields' }],
        type: 'object',
        unevaluatedProperties: false,
        properties: { client_secret: { type: 'string', description: 'shown only here: Gatehouse keeps only its hash' } },
      },
      ClientUpdate: {
        type: 'object',
        additionalProperties: false,
        minProperties: 1,
        properties: { ...settings, tls_client_auth_subject: { type: 'string' } },
      },
      ClientChanged: {
        type: 'object',
        additionalProperties: false,
        required: ['client', 'changes'],
        properties: {
          client: { $ref: '#/components/schemas/Client' },
          changes: {
            type: 'object',
            description: 'field → {from, to}; empty when nothing changed',
            additionalProperties: { type: 'object', required: ['from', 'to'], properties: { from: {}, to: {} } },
          },
        },
      },
      ClientToggled: {
        type: 'object',
        additionalProperties: false,
        required: ['client', 'changed'],
        properties: { client: { $ref: '#/components/schemas/Client' }, changed: { type: 'boolean' } },
      },
      SecretRotation: {
        type: 'object',
        additionalProperties: false,
        properties: { keep_old_for_s: { type: 'integer', minimum: 1, maximum: 2_592_000 } },
      },
      SecretRotated: {
        type: 'object',
        additionalProperties: false,
        required: ['client_id', 'client_secret', 'old_secret_expires_at'],
        properties: { client_id: { type: 'string' }, client_secret: { type: 'string' }, old_secret_expires_at: nullableTime },
      },
      Problem: {
        type: 'object',
        required: ['type', 'title', 'status', 'code', 'request_id'],
        properties: {
          type: { type: 'string' },
          title: { type: 'string' },
          status: { type: 'integer' },
          code: { type: 'string' },
          detail: { type: 'string' },
          request_id: { type: 'string' },
        },
      },
    },
  },
} as const;
