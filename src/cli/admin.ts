// The admin commands `gatehouse init`, `gatehouse clients …` (clients.ts) and `gatehouse keys …` (keys.ts): OAuth clients
// and access-token signing keys in the configured credential store. Shared machinery: admin-session.ts, arguments.ts.
import type { Command } from 'commander';
import { print, printJson } from './output.js';
import { credentialStoreExists, describeCredentialStore } from '../store/open.js';
import { describeFailure, loadConfig, storeCommand, withConfiguredStore, type AdminContext, type JsonOption, type StoreOptions } from './admin-session.js';
import { registerCertificateCommands } from './certs.js';
import { registerClientCommands } from './clients.js';
import { registerKeyCommands } from './keys.js';

// ---- init ----

async function init(ctx: AdminContext, options: StoreOptions & JsonOption): Promise<void> {
  const config = loadConfig(ctx, options);
  let existed: boolean;
  try {
    existed = await credentialStoreExists(config);
  } catch (error) {
    const described = describeFailure(ctx, error, config);
    if (described === undefined) throw error;
    ctx.fail(described.message, described.code);
  }
  await withConfiguredStore(ctx, config, async () => undefined, true);
  const where = describeCredentialStore(config);
  const result = { store: where, backend: config.store.backend, created: !existed };
  if (options.json === true) return printJson(result);
  print(existed ? `credential store ${where} already exists; nothing to do` : `created credential store ${where}`);
}

export function registerAdminCommands(program: Command, ctx: AdminContext): void {
  storeCommand(
    program,
    'init',
    'create the credential store (data_dir/gatehouse.db) if it does not exist (`serve` also does, and makes the master key and the first signing key)',
    ctx,
  )
    .option('--json', 'print one JSON object')
    .action((options: StoreOptions & JsonOption) => init(ctx, options));

  registerClientCommands(program, ctx);
  registerKeyCommands(program, ctx);
  registerCertificateCommands(program, ctx);
}
