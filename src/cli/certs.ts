// `gatehouse ca …` and `gatehouse certs …`: the client-certificate authority kept in the credential store (issue #11
// item 4) — made once, its key sealed under the master key; short-lived client certificates issued under it for a
// registered client's identity, recorded, listed and revoked. Every issuance and revocation goes to the admin chain.
import { closeSync, constants as fsConstants, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Command } from 'commander';
import {
  caFingerprint,
  ClientCaError,
  DEFAULT_CA_NAME,
  DEFAULT_CLIENT_CERTIFICATE_TTL_S,
  initClientCa,
  issuedCertificateView,
  issuedFields,
  issuedView,
  issueForClient,
  openClientCa,
} from '../issuer/client-ca-store.js';
import { openVerifiedKeyEncryptionKey } from '../issuer/master-key.js';
import { DirectoryError, makeDirectory } from '../lib/make-directory.js';
import { CsrError } from '../tls/client-ca.js';
import { pkcs12 } from '../tls/pkcs12.js';
import {
  AdminError,
  iso,
  noSuchClient,
  orMissing,
  printList,
  refreshS,
  storeCommand,
  withStore,
  type AdminContext,
  type JsonOption,
  type StoreOptions,
} from './admin-session.js';
import { parseCertificateTtl, parseClientId, parseName, parseSerial } from './arguments.js';
import { print, printable, printJson } from './output.js';

/** A CSR larger than this is not one (csrPublicKey refuses above 16 KiB too): not read whole. */
const MAX_CSR_FILE_BYTES = 65_536;

/** A ClientCaError as the admin exit code it means. */
function caFailure(ctx: AdminContext, error: unknown): never {
  if (error instanceof ClientCaError) {
    const code = {
      no_ca: ctx.exit.noInput,
      ca_exists: ctx.exit.failure,
      undecryptable_ca: ctx.exit.config,
      no_identity: ctx.exit.failure,
      client_disabled: ctx.exit.failure,
    }[error.code];
    throw new AdminError(error.message, code);
  }
  if (error instanceof CsrError) throw new AdminError(`--csr: ${error.message}`, ctx.exit.usage);
  throw error;
}

// ---- ca ----

async function caInit(ctx: AdminContext, options: StoreOptions & JsonOption & { name?: string }): Promise<void> {
  await withStore(ctx, options, async ({ store, config, record }) => {
    const { kek } = await openVerifiedKeyEncryptionKey(config, store, ctx.masterKey);
    const ca = await initClientCa(store, kek, { commonName: options.name ?? DEFAULT_CA_NAME, now: Date.now() }).catch((error: unknown) =>
      caFailure(ctx, error),
    );
    const fingerprint = await caFingerprint(ca.certPem);
    record({ action: 'ca.init', target: 'client-ca', changes: { sha256_fingerprint: fingerprint, common_name: options.name ?? DEFAULT_CA_NAME } });
    if (options.json === true) return printJson({ created_at: iso(ca.createdAt), sha256_fingerprint: fingerprint, certificate: ca.certPem });
    print(`client CA created; its key is sealed under the master key in the credential store`);
    print(`SHA-256 fingerprint ${fingerprint}`);
    print('issue certificates with `gatehouse certs issue --client ID --out DIR`; print the CA certificate with `gatehouse ca cert`');
  });
}

async function caCert(ctx: AdminContext, options: StoreOptions): Promise<void> {
  await withStore(ctx, options, async ({ store }) => {
    const ca = await store.getClientCa();
    if (ca === undefined) caFailure(ctx, new ClientCaError('no_ca', 'the store has no client CA: run `gatehouse ca init` first'));
    process.stdout.write(ca.certPem);
  });
}

// ---- certs ----

interface IssueOptions extends StoreOptions, JsonOption {
  readonly client: string;
  readonly out: string;
  readonly ttl?: number;
  readonly csr?: string;
}

/** What `certs issue` writes into --out: never over an existing file (a certificate of another client, a key). */
const OUTPUT_FILES = { cert: 'cert.pem', key: 'key.pem', ca: 'ca.pem', p12: 'client.p12' } as const;

async function certsIssue(ctx: AdminContext, options: IssueOptions): Promise<void> {
  const csrPem = options.csr === undefined ? undefined : readCsr(ctx, options.csr);
  const files = Object.values(OUTPUT_FILES).map((name) => path.join(options.out, name));
  const present = files.find((file) => existsSync(file));
  if (present !== undefined)
    throw ctx.fail(`${printable(present)} exists: --out must name a directory without ${Object.values(OUTPUT_FILES).join(', ')}`, ctx.exit.usage);
  await withStore(ctx, options, async ({ store, config, record }) => {
    const client = await store.getClient(options.client);
    if (client === undefined) throw noSuchClient(ctx, options.client);
    const { kek } = await openVerifiedKeyEncryptionKey(config, store, ctx.masterKey);
    const ca = await openClientCa(store, kek).catch((error: unknown) => caFailure(ctx, error));
    const ttlS = options.ttl ?? DEFAULT_CLIENT_CERTIFICATE_TTL_S;
    const now = Date.now();
    const issued = await issueForClient(store, ca, client, { ttlS, now, ...(csrPem !== undefined ? { csrPem } : {}) }).catch((error: unknown) =>
      caFailure(ctx, error),
    );
    record({ action: 'certificate.issue', target: issued.serial, changes: issuedFields(issued, client, csrPem !== undefined) });
    writeOutput(ctx, options.out, OUTPUT_FILES.cert, issued.certPem, 0o644);
    writeOutput(ctx, options.out, OUTPUT_FILES.ca, ca.certPem, 0o644);
    // The same certificate and key in one PKCS#12 file for the tools that want one, under a password shown only now.
    // With a CSR the file holds the certificate alone: the key stays with its holder.
    const p12Password = randomBytes(18).toString('base64url');
    if (issued.keyPem !== undefined) writeOutput(ctx, options.out, OUTPUT_FILES.key, issued.keyPem, 0o600);
    writeOutput(ctx, options.out, OUTPUT_FILES.p12, pkcs12(issued.certPem, issued.keyPem, p12Password, `${client.id} (${issued.identity.value})`), 0o600);
    const view = {
      ...issuedView(issued, client),
      files: [OUTPUT_FILES.cert, OUTPUT_FILES.ca, OUTPUT_FILES.p12, ...(issued.keyPem !== undefined ? [OUTPUT_FILES.key] : [])].map((name) =>
        path.join(options.out, name),
      ),
      p12_password: p12Password,
    };
    if (options.json === true) return printJson(view);
    print(`certificate ${view.serial} for client ${printable(client.id)} (${printable(view.subject)}), valid until ${view.not_after}`);
    print(`written to ${printable(options.out)}: ${view.files.map((file) => path.basename(file)).join(', ')}`);
    print(`${OUTPUT_FILES.p12} password: ${p12Password} (shown only now)`);
    if (issued.keyPem !== undefined)
      print('key.pem and client.p12 hold the only copy of the private key (mode 0600): Gatehouse keeps only the certificate record.');
  });
}

function readCsr(ctx: AdminContext, file: string): string {
  let text: Buffer;
  try {
    text = readFileSync(file);
  } catch (error) {
    throw ctx.fail(`--csr ${printable(file)}: ${(error as NodeJS.ErrnoException).code ?? 'unreadable'}`, ctx.exit.noInput);
  }
  if (text.length > MAX_CSR_FILE_BYTES) throw ctx.fail(`--csr ${printable(file)}: too large for a certificate request`, ctx.exit.usage);
  return text.toString('latin1');
}

/** Creates `name` in `dir` (made 0700 when missing) with `mode`; an existing file is never replaced. */
function writeOutput(ctx: AdminContext, dir: string, name: string, text: string | Buffer, mode: number): void {
  const file = path.join(dir, name);
  try {
    makeDirectory(dir, 0o700);
    const fd = openSync(file, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, mode);
    try {
      writeSync(fd, typeof text === 'string' ? Buffer.from(text) : text);
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    const reason = error instanceof DirectoryError ? error.message : ((error as NodeJS.ErrnoException).code ?? String(error));
    // The certificate is recorded (and can be revoked by its serial); only its delivery failed.
    throw new AdminError(`cannot write ${printable(file)}: ${reason}`, ctx.exit.failure);
  }
}

async function certsList(ctx: AdminContext, options: StoreOptions & JsonOption & { client?: string }): Promise<void> {
  await withStore(ctx, options, async ({ store }) => {
    const now = Date.now();
    const all = await store.listIssuedCertificates();
    const views = all.filter((c) => options.client === undefined || c.clientId === options.client).map((c) => issuedCertificateView(c, now));
    printList(options, views, 'no certificates issued', ['SERIAL', 'CLIENT', 'SUBJECT', 'STATE', 'NOT AFTER'], (c) => [
      c.serial,
      c.client_id,
      c.subject,
      c.state,
      c.not_after ?? '-',
    ]);
  });
}

async function certsRevoke(ctx: AdminContext, serial: string, options: StoreOptions & JsonOption): Promise<void> {
  await withStore(ctx, options, async ({ store, config, record }) => {
    const now = Date.now();
    const revoked = await orMissing(store.revokeCertificate(serial, now), () => new AdminError(`no certificate with serial ${serial}`, ctx.exit.noInput));
    const changed = revoked.revokedAt === now;
    if (changed)
      record({
        action: 'certificate.revoke',
        target: serial,
        changes: { client_id: revoked.clientId, subject: revoked.subject, thumbprint: revoked.thumbprint },
      });
    if (options.json === true) return printJson({ ...issuedCertificateView(revoked, now), changed });
    if (!changed) return print(`certificate ${serial} was revoked already at ${iso(revoked.revokedAt) ?? '-'}; nothing changed`);
    print(`certificate ${serial} (${printable(revoked.subject)}) revoked: every gateway refuses it within ${refreshS(config)}s, inside its validity too`);
  });
}

export function registerCertificateCommands(program: Command, ctx: AdminContext): void {
  const ca = program.command('ca').description('the client-certificate authority kept in the credential store');
  storeCommand(ca, 'init', 'make the client CA once: its key is sealed under the master key in the store, shared by every instance', ctx)
    .option('--name <cn>', `the CA certificate's common name (default "${DEFAULT_CA_NAME}")`, parseName)
    .option('--json', 'print one JSON object')
    .action((options: StoreOptions & JsonOption & { name?: string }) => caInit(ctx, options));
  storeCommand(ca, 'cert', 'print the client CA certificate (PEM), e.g. for tls.client_ca or for a client that checks its chain', ctx).action(
    (options: StoreOptions) => caCert(ctx, options),
  );

  // `certs init` (the development certificates) is main.ts's; the client CA's subcommands join that group.
  const certs = program.commands.find((command) => command.name() === 'certs') ?? program.command('certs');
  certs.description('development certificates (init), and client certificates issued by the client CA (issue, list, revoke)');
  storeCommand(certs, 'issue', "issue a short-lived client certificate with a client's registered identity (--tls-client-auth), recorded in the store", ctx)
    .requiredOption('--client <id>', 'the client the certificate is for', parseClientId)
    .requiredOption(
      '--out <dir>',
      `directory to write ${OUTPUT_FILES.cert}, ${OUTPUT_FILES.ca}, ${OUTPUT_FILES.p12} and (without --csr) ${OUTPUT_FILES.key} into (made 0700)`,
    )
    .option('--ttl <duration>', 'lifetime, 5m to 366d (default 24h)', parseCertificateTtl)
    .option('--csr <file>', 'PEM certificate request: the certificate is for its key (only the key is used), and no key is written')
    .option('--json', 'print one JSON object')
    .action((options: IssueOptions) => certsIssue(ctx, options));
  storeCommand(certs, 'list', 'list issued certificates and their states (valid, expired, revoked)', ctx)
    .option('--client <id>', 'only this client', parseClientId)
    .option('--json', 'print a JSON array')
    .action((options: StoreOptions & JsonOption & { client?: string }) => certsList(ctx, options));
  storeCommand(certs, 'revoke', 'revoke an issued certificate: every gateway refuses it from its next request, inside its validity too', ctx)
    .argument('<serial>', 'serial, as `certs list` shows it', parseSerial)
    .option('--json', 'print one JSON object')
    .action((serial: string, options: StoreOptions & JsonOption) => certsRevoke(ctx, serial, options));
}
