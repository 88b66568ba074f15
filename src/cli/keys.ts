// `gatehouse keys …`: the access-token signing keys of the built-in issuer — rotate (publish first, or at once), revoke
// in an emergency, list with the state of each (exactly one signs).
import type { Command } from 'commander';
import { print, printJson } from './output.js';
import type { Config } from '../config/schema.js';
import { revokeSigningKey, rotateSigningKeys } from '../issuer/key-rotation.js';
import { signingKeyStates, signingKeyView } from '../issuer/key-schedule.js';
import { SIGNING_ALGORITHMS, type SigningAlgorithm } from '../issuer/signing-key.js';
import { openVerifiedKeyEncryptionKey } from '../issuer/master-key.js';
import {
  AdminError,
  iso,
  issuerOf,
  issuerTokenTtlS,
  orMissing,
  printList,
  refreshS,
  storeCommand,
  withStore,
  type AdminContext,
  type JsonOption,
  type StoreOptions,
} from './admin-session.js';
import { parseAlgorithm } from './arguments.js';

// ---- keys ----

async function keysRotate(ctx: AdminContext, options: StoreOptions & JsonOption & { alg?: SigningAlgorithm; now?: boolean }): Promise<void> {
  await withStore(ctx, options, async ({ store, config, record }) => {
    // Proven against the keys already stored: a rotation sealed under another master key would break the gateway.
    const { kek } = await openVerifiedKeyEncryptionKey(config, store, ctx.masterKey);
    const alg = options.alg ?? issuerOf(config).signing_alg;
    const maxTokenLifetimeS = issuerTokenTtlS(config);
    const delayS = issuerOf(config).key_activation_delay_s;
    const { report: r, changes } = await rotateSigningKeys(store, kek, {
      alg,
      now: Date.now(),
      activationDelayS: delayS,
      maxTokenLifetimeS,
      immediately: options.now === true,
    });
    record({ action: 'key.rotate', target: r.kid, changes });
    const head = { kid: r.kid, alg: r.alg, created_at: r.created_at, activates_at: r.activates_at };
    if (options.now === true) {
      if (options.json === true) return printJson({ ...head, stopped: r.stopped, without_publication_delay: r.without_publication_delay });
      print(`new signing key ${r.kid} (${r.alg}): published and signing now`);
      for (const key of r.stopped) {
        print(
          key.signed
            ? `key ${key.kid} stops signing now; it only verifies until ${key.expires_at ?? '-'}, when its last token has expired`
            : `pending key ${key.kid} will never sign; it is unpublished now`,
        );
      }
      if (r.without_publication_delay) ctx.warn(publicationWarning(config));
      return;
    }
    if (options.json === true) return printJson({ ...head, retires: r.retires, without_publication_delay: false });
    print(`new signing key ${r.kid} (${r.alg}): published now, signs from ${r.activates_at ?? '-'}`);
    print(
      r.retires === null
        ? 'no previous key to retire'
        : `key ${r.retires.kid} stops signing at ${r.retires.retired_at ?? '-'} and is unpublished at ${r.retires.expires_at ?? '-'}`,
    );
  });
}

function publicationWarning(config: Config): string {
  const delayS = issuerOf(config).key_activation_delay_s;
  return (
    `the new key signs without the ${delayS}s publication delay. Resource servers that cached the JWKS before ` +
    'now may refuse its tokens until they fetch the JWKS again.'
  );
}

async function keysRevoke(ctx: AdminContext, kid: string, options: StoreOptions & JsonOption & { alg?: SigningAlgorithm }): Promise<void> {
  await withStore(ctx, options, async ({ store, config, record }) => {
    const { kek } = await openVerifiedKeyEncryptionKey(config, store, ctx.masterKey);
    const { revoked, succession, signer, previousSigner } = await orMissing(
      revokeSigningKey(store, kek, { kid, alg: options.alg ?? issuerOf(config).signing_alg, now: Date.now() }),
      () => new AdminError(`no signing key with kid ${kid}`, ctx.exit.noInput),
    );
    if (revoked !== undefined) {
      record({ action: 'key.revoke', target: kid, changes: { revoked_at: iso(revoked.revokedAt), succession, signer: signer?.kid ?? null } });
    }
    const view = {
      kid,
      revoked: revoked !== undefined,
      revoked_at: iso(revoked?.revokedAt ?? null),
      succession,
      signer: signer === undefined ? null : signer.kid,
    };
    if (options.json === true) return printJson(view);
    if (revoked === undefined) return print(`key ${kid} is already revoked; nothing changed`);
    print(`key ${kid} revoked: it is unpublished now, and every token it signed is refused by every gateway within ${refreshS(config)}s`);
    const signerKid = signer?.kid ?? '-';
    // "Goes on" only about the key that was signing a moment ago; a key that had stopped signs again.
    const wasSigning = signer !== undefined && signer.kid === previousSigner;
    if (succession === 'unchanged') print(wasSigning ? `key ${signerKid} goes on signing` : `key ${signerKid} signs now`);
    if (succession === 'kept')
      print(
        wasSigning
          ? `key ${signerKid} goes on signing; its handover to the revoked key is cancelled`
          : `key ${signerKid} signs again; its retirement is cancelled`,
      );
    if (succession === 'activated') print(`pending key ${signerKid} signs now, before its publication delay ran out`);
    if (succession === 'created') print(`new key ${signerKid} (${signer?.alg ?? '-'}) signs now`);
    if (succession === 'activated' || succession === 'created') ctx.warn(publicationWarning(config));
  });
}

async function keysList(ctx: AdminContext, options: StoreOptions & JsonOption): Promise<void> {
  await withStore(ctx, options, async ({ store }) => {
    const stored = await store.listSigningKeys();
    const states = signingKeyStates(stored, Date.now());
    const keys = stored.map((key) => signingKeyView(key, states));
    printList(options, keys, 'no signing keys', ['KID', 'ALG', 'STATE', 'CREATED', 'ACTIVATES', 'RETIRED', 'EXPIRES'], (k) => [
      k.kid,
      k.alg,
      k.state,
      k.created_at ?? '-',
      k.activates_at ?? '-',
      k.retired_at ?? '-',
      k.expires_at ?? '-',
    ]);
  });
}

export function registerKeyCommands(program: Command, ctx: AdminContext): void {
  const keys = program.command('keys').description('access-token signing keys of the built-in issuer');

  storeCommand(
    keys,
    'rotate',
    'publish a new signing key; it signs after issuer.key_activation_delay_s (or at once with --now) and the current key retires then',
    ctx,
  )
    .option('--alg <alg>', `${SIGNING_ALGORITHMS.join(' or ')} (default: issuer.signing_alg)`, parseAlgorithm)
    .option(
      '--now',
      'sign with the new key at once, without the publication delay (resource servers with a cached JWKS may refuse its tokens until they refetch it)',
    )
    .option('--json', 'print one JSON object')
    .action((options: StoreOptions & JsonOption & { alg?: SigningAlgorithm; now?: boolean }) => keysRotate(ctx, options));

  storeCommand(
    keys,
    'revoke',
    'emergency: unpublish a signing key now, so every token it signed is refused; another key signs at once (a new one if needed, without the publication delay)',
    ctx,
  )
    .argument('<kid>', 'key id, as `keys list` shows it')
    .option('--alg <alg>', `algorithm of a new key, if one must be made (default: issuer.signing_alg)`, parseAlgorithm)
    .option('--json', 'print one JSON object')
    .action((kid: string, options: StoreOptions & JsonOption & { alg?: SigningAlgorithm }) => keysRevoke(ctx, kid, options));

  storeCommand(keys, 'list', 'list signing keys and their states (never private key material)', ctx)
    .option('--json', 'print a JSON array')
    .action((options: StoreOptions & JsonOption) => keysList(ctx, options));
}
