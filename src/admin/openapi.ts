// The admin API's OpenAPI 3.1 document, served at GET /openapi.json on the admin listener. A test checks every answer the
// API really gives against these schemas (test/admin/api.test.ts), so the document cannot drift from the code unnoticed.
import { API_BODY_LIMIT } from './api.js';

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
  '413': problem(`The body is over ${API_BODY_LIMIT} bytes`),
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
      'What `gatehouse clients`, `keys list|rotate|revoke`, `ca init|cert`, `certs issue|list|revoke` and `audit query|verify` do, over the admin listener. Every call needs an admin credential: a client certificate ' +
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
    '/v1/keys': {
      get: {
        operationId: 'listSigningKeys',
        summary: 'The signing keys and the state of each (never key material)',
        responses: { '200': ok('Every signing key the store holds', 'SigningKeyList'), ...refusals },
      },
    },
    '/v1/keys/rotate': {
      post: {
        operationId: 'rotateSigningKey',
        summary: 'A new signing key: published now, signing after the publication delay; with `now`, signing at once',
        requestBody: { required: false, content: json('KeyRotation') },
        responses: { '200': ok('The new key and the keys it retires or stopped', 'KeyRotated'), ...changeRefusals },
      },
    },
    '/v1/keys/{kid}/revoke': {
      parameters: [{ name: 'kid', in: 'path', required: true, schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' } }],
      post: {
        operationId: 'revokeSigningKey',
        summary: 'Emergency revocation: unpublished now, every token it signed refused; a successor signs if it was signing',
        responses: { '200': ok('What the revocation did; `revoked` is false when it already was', 'SigningKeyRevoked'), ...changeRefusals },
      },
    },
    '/v1/certificates': {
      get: {
        operationId: 'listCertificates',
        summary: 'A page of the client certificates the client CA issued, ordered by serial',
        parameters: [
          { name: 'client', in: 'query', description: 'only this client’s', schema: { type: 'string' } },
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 200, default: 50 } },
          { name: 'after', in: 'query', description: 'the `next_after` of the previous page', schema: { type: 'string' } },
        ],
        responses: { '200': ok('A page of certificates', 'CertificatePage'), '400': problem('A query parameter is not acceptable'), ...refusals },
      },
      post: {
        operationId: 'issueCertificate',
        summary: "Issue a client certificate with the client's registered tls_client_auth identity; a CSR gives only its key",
        requestBody: { required: true, content: json('CertificateRequest') },
        responses: {
          '201': ok('The certificate, the CA certificate, and the private key when it was made here (its only copy)', 'CertificateIssued'),
          '409': problem('No client CA yet, a client without an identity, or a disabled client; `detail` says which'),
          ...changeRefusals,
        },
      },
    },
    '/v1/ca': {
      get: {
        operationId: 'getClientCa',
        summary: "The client CA's certificate (PEM) and SHA-256 fingerprint",
        responses: { '200': ok('The client CA', 'ClientCa'), '404': problem('The store has no client CA yet'), ...refusals },
      },
      post: {
        operationId: 'initClientCa',
        summary: 'Make the client CA once; its key is sealed under the master key in the store, shared by every instance',
        requestBody: { required: false, content: json('ClientCaInit') },
        responses: { '201': ok('The client CA', 'ClientCa'), '409': problem('The store has a client CA already'), ...changeRefusals },
      },
    },
    '/v1/certificates/{serial}/revoke': {
      parameters: [{ name: 'serial', in: 'path', required: true, schema: { type: 'string', pattern: '^[0-9a-fA-F:]{1,95}$' } }],
      post: {
        operationId: 'revokeCertificate',
        summary: 'Refuse the certificate from the next request on, inside its validity too (idempotent)',
        responses: { '200': ok('The certificate; `changed` is false when it was revoked already', 'CertificateRevoked'), ...changeRefusals },
      },
    },
    '/v1/audit/records': {
      get: {
        operationId: 'queryAudit',
        summary: 'Audit records matching every filter given (`gatehouse audit query`), chain by chain in seq order',
        parameters: [
          { name: 'type', in: 'query', schema: { type: 'string', enum: ['decision', 'completion', 'admin', 'event', 'all'], default: 'decision' } },
          { name: 'since', in: 'query', description: 'ISO 8601 with a zone, or relative (30m, 24h, 7d)', schema: { type: 'string' } },
          { name: 'until', in: 'query', description: 'ISO 8601 with a zone, or relative', schema: { type: 'string' } },
          { name: 'client', in: 'query', description: 'every record naming this OAuth client', schema: { type: 'string' } },
          { name: 'subject', in: 'query', schema: { type: 'string' } },
          { name: 'route', in: 'query', schema: { type: 'string' } },
          { name: 'path', in: 'query', description: 'a canonical path prefix, by whole segments', schema: { type: 'string' } },
          { name: 'decision', in: 'query', schema: { type: 'string', enum: ['allow', 'deny'] } },
          { name: 'status', in: 'query', schema: { type: 'integer', minimum: 100, maximum: 599 } },
          { name: 'request_id', in: 'query', schema: { type: 'string' } },
          { name: 'trace_id', in: 'query', schema: { type: 'string', pattern: '^[0-9a-f]{32}$' } },
          { name: 'instance', in: 'query', description: 'one chain', schema: { type: 'string' } },
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
        ],
        responses: {
          '200': ok('The records (a decision query: each allow followed by its completion); `truncated` when more matched', 'AuditRecords'),
          '400': problem('A filter is not acceptable; `detail` names it'),
          ...refusals,
        },
      },
    },
    '/v1/audit/verify': {
      post: {
        operationId: 'verifyAudit',
        summary: "Verify every chain (`gatehouse audit verify`), with the gateway's audit key: checkpoint signatures and cadence too",
        responses: { '200': ok('The verification report; `intact` is false when a chain is broken', 'AuditVerification'), ...changeRefusals },
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
      SigningKey: {
        type: 'object',
        additionalProperties: false,
        required: ['kid', 'alg', 'state', 'created_at', 'activates_at', 'retired_at', 'expires_at', 'revoked_at'],
        properties: {
          kid: { type: 'string' },
          alg: { type: 'string' },
          state: { type: 'string', enum: ['signing', 'pending', 'verifying', 'expired', 'revoked'] },
          created_at: nullableTime,
          activates_at: nullableTime,
          retired_at: nullableTime,
          expires_at: nullableTime,
          revoked_at: nullableTime,
        },
      },
      SigningKeyList: {
        type: 'object',
        additionalProperties: false,
        required: ['keys'],
        properties: { keys: { type: 'array', items: { $ref: '#/components/schemas/SigningKey' } } },
      },
      SigningKeyRevoked: {
        type: 'object',
        additionalProperties: false,
        required: ['kid', 'revoked', 'revoked_at', 'succession', 'signer'],
        properties: {
          kid: { type: 'string' },
          revoked: { type: 'boolean' },
          revoked_at: nullableTime,
          succession: { type: 'string', enum: ['unchanged', 'kept', 'activated', 'created'] },
          signer: { type: ['string', 'null'], description: 'the kid that signs now' },
        },
      },
      KeyRotation: {
        type: 'object',
        additionalProperties: false,
        properties: {
          alg: { type: 'string', enum: ['EdDSA', 'ES256'], description: "default: the issuer's signing_alg" },
          now: { type: 'boolean', description: 'sign at once, without the publication delay (as `keys rotate --now`)' },
        },
      },
      KeyRotated: {
        type: 'object',
        additionalProperties: false,
        required: ['kid', 'alg', 'created_at', 'activates_at', 'retires', 'stopped', 'without_publication_delay'],
        properties: {
          kid: { type: 'string' },
          alg: { type: 'string' },
          created_at: nullableTime,
          activates_at: nullableTime,
          retires: {
            oneOf: [
              { type: 'null' },
              {
                type: 'object',
                additionalProperties: false,
                required: ['kid', 'retired_at', 'expires_at'],
                properties: { kid: { type: 'string' }, retired_at: nullableTime, expires_at: nullableTime },
              },
            ],
          },
          stopped: {
            type: 'array',
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['kid', 'retired_at', 'expires_at', 'signed'],
              properties: { kid: { type: 'string' }, retired_at: nullableTime, expires_at: nullableTime, signed: { type: 'boolean' } },
            },
          },
          without_publication_delay: { type: 'boolean' },
        },
      },
      ClientCa: {
        type: 'object',
        additionalProperties: false,
        required: ['created_at', 'sha256_fingerprint', 'certificate'],
        properties: { created_at: nullableTime, sha256_fingerprint: { type: 'string' }, certificate: { type: 'string' } },
      },
      ClientCaInit: { type: 'object', additionalProperties: false, properties: { common_name: { type: 'string' } } },
      CertificateRequest: {
        type: 'object',
        additionalProperties: false,
        required: ['client_id'],
        properties: {
          client_id: { type: 'string' },
          ttl_s: { type: 'integer', minimum: 300, maximum: 31_622_400, default: 86_400 },
          csr: { type: 'string', description: 'a PKCS#10 request (PEM): its key, never its names, is used' },
        },
      },
      CertificateIssued: {
        type: 'object',
        additionalProperties: false,
        required: ['serial', 'client_id', 'subject', 'thumbprint', 'not_before', 'not_after', 'certificate', 'ca_certificate'],
        properties: {
          serial: { type: 'string' },
          client_id: { type: 'string' },
          subject: { type: 'string' },
          thumbprint: { type: 'string' },
          not_before: { type: 'string', format: 'date-time' },
          not_after: { type: 'string', format: 'date-time' },
          certificate: { type: 'string' },
          ca_certificate: { type: 'string' },
          private_key: { type: 'string', description: 'PKCS#8 PEM, when no CSR was given: its only copy' },
        },
      },
      CertificateFields: {
        type: 'object',
        required: ['serial', 'client_id', 'subject', 'state', 'thumbprint', 'not_before', 'not_after', 'issued_at', 'revoked_at'],
        properties: {
          serial: { type: 'string', pattern: '^[0-9a-f]{1,64}$' },
          client_id: { type: 'string' },
          subject: { type: 'string' },
          state: { type: 'string', enum: ['valid', 'expired', 'revoked'] },
          thumbprint: { type: 'string', description: 'RFC 8705 x5t#S256' },
          not_before: nullableTime,
          not_after: nullableTime,
          issued_at: nullableTime,
          revoked_at: nullableTime,
        },
      },
      Certificate: { allOf: [{ $ref: '#/components/schemas/CertificateFields' }], unevaluatedProperties: false },
      CertificatePage: {
        type: 'object',
        additionalProperties: false,
        required: ['certificates', 'next_after'],
        properties: {
          certificates: { type: 'array', items: { $ref: '#/components/schemas/Certificate' } },
          next_after: { type: ['string', 'null'] },
        },
      },
      CertificateRevoked: {
        allOf: [{ $ref: '#/components/schemas/CertificateFields' }],
        type: 'object',
        unevaluatedProperties: false,
        required: ['changed'],
        properties: { changed: { type: 'boolean' } },
      },
      AuditRecords: {
        type: 'object',
        additionalProperties: false,
        required: ['records', 'truncated'],
        properties: {
          records: {
            type: 'array',
            items: {
              type: 'object',
              required: ['seq', 'ts', 'type', 'instance', 'prev', 'hash'],
              properties: { seq: { type: 'integer' }, ts: { type: 'string' } },
            },
          },
          truncated: { type: 'boolean' },
        },
      },
      AuditVerification: {
        type: 'object',
        additionalProperties: false,
        required: ['intact', 'signatures_checked', 'report'],
        properties: {
          intact: { type: 'boolean' },
          signatures_checked: { type: 'boolean', description: "checkpoint signatures were checked with the gateway's audit key" },
          report: { type: 'object', description: 'as `gatehouse audit verify --json` prints it' },
        },
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
