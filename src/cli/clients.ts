// `gatehouse clients …`: OAuth clients of the built-in issuer. Each command parses, calls one operation of
// src/issuer/clients.ts, records the change in the admin chain and prints; a secret exists in clear only in the output of
// `add` and `rotate-secret`.
import type { Command } from 'commander';
import { print, printable, printJson } from './output.js';
import {
  addClient,
  addedFields,
  clientDetailView,
  disableClient,
  enableClient,
  removeClient,
  rotateClientSecret,
  updateClient,
  type ClientSettings,
} from '../issuer/clients.js';
import {
  SECRET_WARNING,
  checkTokenTtl,
  clientView,
  iso,
  issuerTokenTtlS,
  noSuchClient,
  onClient,
  printList,
  refreshS,
  storeCommand,
  ttlText,
  withStore,
  type AdminContext,
  type JsonOption,
  type StoreOptions,
} from './admin-session.js';
import {
  ID_HELP,
  MAX_NAME_CHARS,
  MIN_TOKEN_TTL_S,
  collectAudience,
  parseCertificateIdentity,
  parseClientId,
  parseDuration,
  parseName,
  parseScopes,
  parseTokenTtl,
} from './arguments.js';

// ---- clients ----

type TokenTtlOption = number | 'default';
type AddOptions = StoreOptions & JsonOption & { scope: string[]; audience: string[]; tokenTtl?: TokenTtlOption; requireDpop?: boolean; tlsClientAuth?: string };

/** A client's token lifetime from --token-ttl: seconds, or null for the issuer's. */
function tokenLifetime(option: TokenTtlOption): number | null {
  return option === 'default' ? null : option;
}

async function clientsAdd(ctx: AdminContext, name: string, options: AddOptions): Promise<void> {
  await withStore(ctx, options, async ({ store, config, record }) => {
    const ttl = options.tokenTtl === undefined ? null : tokenLifetime(options.tokenTtl);
    checkTokenTtl(ctx, config, ttl);
    const settings: ClientSettings = {
      name,
      scopes: options.scope,
      audiences: options.audience,
      accessTokenTtlS: ttl,
      requireDpop: options.requireDpop === true,
      tlsClientAuthSubject: options.tlsClientAuth ?? null,
    };
    const { client, secret } = await addClient(store, settings, Date.now());
    record({ action: 'client.add', target: client.id, changes: addedFields(client) });
    if (options.json === true) {
      printJson({
        client_id: client.id,
        ...(secret !== undefined ? { client_secret: secret } : { tls_client_auth_subject: client.tlsClientAuthSubject }),
        name,
        scopes: client.scopes,
        audiences: client.audiences,
        access_token_ttl_s: client.accessTokenTtlS,
        require_dpop: client.requireDpop,
      });
    } else {
      print(
        secret !== undefined
          ? `client_id:     ${client.id}\nclient_secret: ${secret}\n${SECRET_WARNING}`
          : `client_id:     ${client.id}\nauthenticates with a client certificate for ${client.tlsClientAuthSubject ?? ''} (tls_client_auth; no secret)`,
      );
    }
  });
}

async function clientsList(ctx: AdminContext, options: StoreOptions & JsonOption): Promise<void> {
  await withStore(ctx, options, async ({ store }) => {
    const now = Date.now();
    const clients = (await store.listClients()).map((client) => clientView(client, now));
    printList(options, clients, 'no clients', ['CLIENT_ID', 'NAME', 'ENABLED', 'SCOPES', 'AUDIENCES', 'SECRETS', 'CREATED'], (c) => [
      c.client_id,
      c.name,
      c.enabled ? 'yes' : 'no',
      c.scopes.join(' '),
      c.audiences.join(' ') || '-',
      String(c.active_secrets),
      c.created_at ?? '-',
    ]);
  });
}

async function clientsShow(ctx: AdminContext, id: string, options: StoreOptions & JsonOption): Promise<void> {
  await withStore(ctx, options, async ({ store, config }) => {
    const now = Date.now();
    const client = await store.getClient(id);
    if (client === undefined) throw noSuchClient(ctx, id);
    const view = clientDetailView(client, now);
    const { secrets } = view;
    if (options.json === true) return printJson(view);
    print(
      [
        `client_id:  ${view.client_id}`,
        `name:       ${printable(view.name)}`,
        `enabled:    ${view.enabled ? 'yes' : 'no'}`,
        `scopes:     ${view.scopes.join(' ')}`,
        `audiences:  ${view.audiences.join(' ') || '(default audience)'}`,
        `token ttl:  ${ttlText(view.access_token_ttl_s, config)}`,
        `dpop:       ${view.require_dpop ? 'required (DPoP-bound tokens only)' : 'optional'}`,
        `auth:       ${view.tls_client_auth_subject === null ? 'client secret' : `client certificate for ${printable(view.tls_client_auth_subject)} (tls_client_auth)`}`,
        ...(view.tokens_not_before === null ? [] : [`tokens:     issued before ${view.tokens_not_before} are refused (set by the last disable or enable)`]),
        `created:    ${view.created_at ?? '-'}`,
        `updated:    ${view.updated_at ?? '-'}`,
        `secrets:    ${view.active_secrets} active`,
        ...secrets.map(
          (s, i) =>
            `  ${i + 1}. created ${s.created_at ?? '-'}, ${s.expires_at === null ? 'no expiry' : `${s.active ? 'expires' : 'expired'} ${s.expires_at}`}`,
        ),
      ].join('\n'),
    );
  });
}

type UpdateOptions = StoreOptions &
  JsonOption & {
    name?: string;
    scope?: string[];
    audience?: string[];
    clearAudiences?: boolean;
    tokenTtl?: TokenTtlOption;
    requireDpop?: boolean;
    tlsClientAuth?: string;
  };

async function clientsUpdate(ctx: AdminContext, id: string, options: UpdateOptions): Promise<void> {
  if (options.audience !== undefined && options.clearAudiences === true) ctx.fail('--audience and --clear-audiences cannot be combined', ctx.exit.usage);
  const settings: Partial<ClientSettings> = {
    ...(options.name !== undefined ? { name: options.name } : {}),
    ...(options.scope !== undefined ? { scopes: options.scope } : {}),
    ...(options.audience !== undefined ? { audiences: options.audience } : options.clearAudiences === true ? { audiences: [] } : {}),
    ...(options.tokenTtl !== undefined ? { accessTokenTtlS: tokenLifetime(options.tokenTtl) } : {}),
    ...(options.requireDpop !== undefined ? { requireDpop: options.requireDpop } : {}),
    ...(options.tlsClientAuth !== undefined ? { tlsClientAuthSubject: options.tlsClientAuth } : {}),
  };
  if (Object.keys(settings).length === 0)
    ctx.fail('nothing to change: give --name, --scope, --audience, --clear-audiences, --token-ttl, --[no-]require-dpop or --tls-client-auth', ctx.exit.usage);
  await withStore(ctx, options, async ({ store, config, record }) => {
    checkTokenTtl(ctx, config, settings.accessTokenTtlS);
    const { client, changes } = await onClient(ctx, id, updateClient(store, id, settings));
    if (Object.keys(changes).length > 0) record({ action: 'client.update', target: id, changes });
    if (options.json === true) return printJson({ ...clientView(client, Date.now()), changes });
    if (Object.keys(changes).length === 0) return print(`client ${id} already has these settings; nothing changed`);
    for (const [field, change] of Object.entries(changes)) print(`${field}: ${JSON.stringify(change.from)} -> ${JSON.stringify(change.to)}`);
    print(
      `client ${id} updated. Tokens already issued keep what they were issued with until they expire (at most ${issuerTokenTtlS(config)}s); ` +
        '`clients disable` then `clients enable` ends them now.',
    );
  });
}

async function clientsDisable(ctx: AdminContext, id: string, options: StoreOptions): Promise<void> {
  await withStore(ctx, options, async ({ store, config, record }) => {
    const { changes } = await onClient(ctx, id, disableClient(store, id, Date.now()));
    if (Object.keys(changes).length === 0) return print(`client ${id} is already disabled`);
    record({ action: 'client.disable', target: id, changes });
    print(`client ${id} disabled: it cannot authenticate, and every token issued to it so far is refused within ${refreshS(config)}s, also after an enable`);
  });
}

async function clientsEnable(ctx: AdminContext, id: string, options: StoreOptions): Promise<void> {
  await withStore(ctx, options, async ({ store, record }) => {
    const { changes } = await onClient(ctx, id, enableClient(store, id));
    if (Object.keys(changes).length === 0) return print(`client ${id} is already enabled`);
    record({ action: 'client.enable', target: id, changes });
    print(`client ${id} enabled: it can authenticate again; no token issued before this enable is accepted`);
  });
}

async function clientsRotateSecret(ctx: AdminContext, id: string, options: StoreOptions & JsonOption & { keepOldFor?: number }): Promise<void> {
  await withStore(ctx, options, async ({ store, record }) => {
    const { secret, oldSecretExpiresAt } = await onClient(ctx, id, rotateClientSecret(store, id, options.keepOldFor, Date.now()));
    record({ action: 'client.rotate_secret', target: id, changes: { old_secret_expires_at: iso(oldSecretExpiresAt) } });
    if (options.json === true) return printJson({ client_id: id, client_secret: secret, old_secret_expires_at: iso(oldSecretExpiresAt) });
    const old =
      oldSecretExpiresAt === null ? 'every previous secret stopped working now' : `the previous secret keeps working until ${iso(oldSecretExpiresAt) ?? '-'}`;
    print(`client_id:     ${id}\nclient_secret: ${secret}\n${old}\n${SECRET_WARNING}`);
  });
}

async function clientsRemove(ctx: AdminContext, id: string, options: StoreOptions): Promise<void> {
  await withStore(ctx, options, async ({ store, record }) => {
    await onClient(ctx, id, removeClient(store, id));
    record({ action: 'client.remove', target: id, changes: {} });
    print(`client ${id} removed`);
  });
}

function clientIdCommand(parent: Command, name: string, description: string, ctx: AdminContext): Command {
  return storeCommand(parent, name, description, ctx).argument('<id>', 'client id', parseClientId).addHelpText('after', ID_HELP);
}

export function registerClientCommands(program: Command, ctx: AdminContext): void {
  const scopes = (value: string): string[] => parseScopes(value, ctx.warn);
  const clients = program.command('clients').description('OAuth clients of the built-in issuer');

  storeCommand(clients, 'add', 'register a client; prints its id and secret (the secret only this once)', ctx)
    .argument('<name>', `display name (1-${MAX_NAME_CHARS} printable characters)`, parseName)
    .requiredOption('--scope <scopes>', 'space-separated scopes the client may request (RFC 6749 scope tokens)', scopes)
    .option('--audience <uri>', 'an audience (resource URI) the client may request; repeatable', collectAudience, [])
    .option(
      '--token-ttl <duration>',
      `lifetime of its access tokens, e.g. 5m (${MIN_TOKEN_TTL_S}s up to issuer.access_token_ttl_s; default: that)`,
      parseTokenTtl,
    )
    .option('--require-dpop', 'issue it DPoP-bound tokens only (RFC 9449): a token request without a valid DPoP proof is refused')
    .option(
      '--tls-client-auth <san>',
      'it authenticates with a client certificate carrying this URI or DNS SAN (RFC 8705 tls_client_auth) and gets no secret',
      parseCertificateIdentity,
    )
    .option('--json', 'print one JSON object')
    .action((name: string, options: AddOptions) => clientsAdd(ctx, name, options));

  storeCommand(clients, 'list', 'list clients (never secrets or hashes)', ctx)
    .option('--json', 'print a JSON array')
    .action((options: StoreOptions & JsonOption) => clientsList(ctx, options));

  clientIdCommand(clients, 'show', "one client's details and its secrets' creation and expiry times", ctx)
    .option('--json', 'print one JSON object')
    .action((id: string, options: StoreOptions & JsonOption) => clientsShow(ctx, id, options));

  clientIdCommand(
    clients,
    'update',
    "change a client's name, scopes, audiences, token lifetime, DPoP requirement or certificate identity (recorded in the admin log)",
    ctx,
  )
    .option('--name <name>', `new display name (1-${MAX_NAME_CHARS} printable characters)`, parseName)
    .option('--scope <scopes>', 'the space-separated scopes it may request, replacing the current ones', scopes)
    .option('--audience <uri>', 'an audience (resource URI) it may request; repeatable; replaces the current list', collectAudience)
    .option('--clear-audiences', "no audiences of its own: tokens get the issuer's default audience")
    .option('--token-ttl <duration>', `lifetime of its access tokens, e.g. 5m, or "default" (issuer.access_token_ttl_s)`, parseTokenTtl)
    .option('--require-dpop', 'issue it DPoP-bound tokens only from now on')
    .option('--no-require-dpop', 'let it have plain bearer tokens again')
    .option(
      '--tls-client-auth <san>',
      'from now on it authenticates with a client certificate carrying this SAN (its secrets stop working)',
      parseCertificateIdentity,
    )
    .option('--json', 'print the client and the changes as one JSON object')
    .action((id: string, options: UpdateOptions) => clientsUpdate(ctx, id, options));

  clientIdCommand(clients, 'disable', 'stop a client from authenticating and end every token issued to it so far, for good (idempotent)', ctx).action(
    (id: string, options: StoreOptions) => clientsDisable(ctx, id, options),
  );

  clientIdCommand(clients, 'enable', 'let a disabled client authenticate again; no token issued before the enable is ever accepted (idempotent)', ctx).action(
    (id: string, options: StoreOptions) => clientsEnable(ctx, id, options),
  );

  clientIdCommand(clients, 'rotate-secret', 'give a client a new secret; the old one ends now or after --keep-old-for', ctx)
    .option('--keep-old-for <duration>', 'keep the newest old secret valid this long, e.g. 30s, 15m, 24h, 7d (at most 30d)', parseDuration)
    .option('--json', 'print one JSON object')
    .action((id: string, options: StoreOptions & JsonOption & { keepOldFor?: number }) => clientsRotateSecret(ctx, id, options));

  clientIdCommand(clients, 'remove', 'delete a client and its secrets; its tokens stop working too', ctx).action((id: string, options: StoreOptions) =>
    clientsRemove(ctx, id, options),
  );
}
