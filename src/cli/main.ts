#!/usr/bin/env node
// The `gatehouse` command: serve, certs, clients, keys, store, audit. The only module that reads the environment, argv and signals.
import 'reflect-metadata';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism, userInfo } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import { pino, type Logger } from 'pino';
import { ConfigError, configFromText, readConfigText, type ConfigOverrides } from '../config/load.js';
import { restartOnlyChanges } from '../config/reload.js';
import type { Config } from '../config/schema.js';
import { MAX_WORKERS } from '../config/edge.js';
import { AdminListenError, Gateway } from '../gateway.js';
import { DirectoryError } from '../lib/make-directory.js';
import { MASTER_KEY_ENV, MasterKeyError } from '../lib/key-encryption.js';
import { SigningKeyError } from '../issuer/signing-key.js';
import { StoreError } from '../store/contract.js';
import { initDevCertificates } from '../tls/ca.js';
import { readTlsMaterial, TlsFileError } from '../tls/context.js';
import { reloadRunningGateway, writePidFile } from './reload.js';
import { adminActor } from '../audit/admin-log.js';
import { AuditKeyError } from '../audit/audit-key.js';
import { AuditLogError } from '../audit/event.js';
import { registerAdminCommands } from './admin.js';
import type { AdminContext } from './admin-session.js';
import { protectDashIds } from './arguments.js';
import { registerAuditCommands } from './audit.js';
import { registerStoreCommands } from './store-copy.js';
import { channelToPrimary, onConfigReload, onTicketKeys, startFromPrimary, supervise, type WorkerStart } from './supervisor.js';

/** sysexits(3): the exit codes scripts and supervisors understand. */
export const EXIT = { ok: 0, failure: 1, usage: 64, noInput: 66, unavailable: 69, software: 70, config: 78 } as const;

const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const DEFAULT_CONFIG = resolve(PACKAGE_ROOT, 'config/gatehouse.example.yaml');

/** Read at run time, so the version printed is the one of the package actually installed, not of the build. */
function packageVersion(): string {
  try {
    const manifest: unknown = JSON.parse(readFileSync(resolve(PACKAGE_ROOT, 'package.json'), 'utf8'));
    if (typeof manifest === 'object' && manifest !== null && 'version' in manifest && typeof manifest.version === 'string') return manifest.version;
  } catch {
    // A missing or broken package.json must not stop `--version` from answering; the install is broken either way.
  }
  return 'unknown';
}

const PROGRAM_HELP = `
Exit codes: 0 ok; 1 failure (cannot listen, store, directory or I/O error, output could not be written);
64 usage (bad argument or option); 66 no such client, key or credential store; 69 credential store unreachable;
70 internal error (serve), or a store copy that does not read back as its source; 78 configuration.
Each command's --help lists the codes it can return.`;

const SERVE_HELP = `
Signals: SIGHUP reloads the TLS certificate and key, and the configuration's routes, upstreams and quotas (a file that
changes anything else is refused whole: that needs a restart); SIGTERM and SIGINT drain open requests, then stop. With
--workers N the primary passes both to every worker and exits once every worker has drained.

Exit codes: 0 stopped by SIGTERM or SIGINT after draining; 1 failure (cannot listen, credential store, cannot create a
directory, log output could not be written, a worker that failed its drain); 64 usage (bad argument or option); 69 the
PostgreSQL credential store cannot be reached; 70 internal error (a fault no handler caught); 78 configuration (invalid
config file, a TLS file missing, unreadable or malformed, invalid ${MASTER_KEY_ENV} or master key file). With --workers N,
a worker that fails before the gateway is up, or workers that exit 5 times in 30 s, end the primary with that worker's
exit code (70 if it was killed by a signal).`;

const CERTS_INIT_HELP = `
Exit codes: 0 created, or already present; 1 failure (an incomplete set without --force, cannot create the directory or
write a file, output could not be written); 64 usage (bad argument or option).`;

/** What an operator can do about each listen error; anything else is unexpected and keeps its stack (exit 70). */
const LISTEN_ERRORS: Readonly<Record<string, string>> = {
  EADDRINUSE: 'address already in use by another process',
  EACCES: 'permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE',
  EPERM: 'operation not permitted',
  EADDRNOTAVAIL: 'address not available on this machine',
  EAFNOSUPPORT: 'address family not supported on this machine; is IPv6 disabled?',
  // Linux answers EINVAL for an IPv6 link-local address without its interface.
  EINVAL: 'address cannot be bound; an IPv6 link-local address needs its interface, e.g. fe80::1%eth0',
  ENOTFOUND: 'cannot resolve the host name',
  EAI_AGAIN: 'cannot resolve the host name now: a temporary DNS failure; try again, or give an IP address',
  EAI_FAIL: 'cannot resolve the host name: the DNS resolver failed',
};

function listenFailure(host: string, port: number, code: string): string | undefined {
  let explanation = LISTEN_ERRORS[code];
  if (explanation === undefined) return undefined;
  // `[::1]` is how a URL writes an address, not how a listen address is given.
  if (code === 'ENOTFOUND' && /^\[.*\]$/.test(host)) explanation += '; give an IPv6 address without brackets, e.g. ::1';
  return `cannot listen on ${isIP(host) === 6 ? `[${host}]` : host}:${port} (${code}: ${explanation})`;
}

/** Who runs the command, for the admin log. A uid without a passwd entry (common in containers) is named by its number. */
function operatingSystemUser(): { readonly name: string; readonly uid: number } {
  const uid = process.getuid?.() ?? -1;
  try {
    return { name: userInfo().username, uid };
  } catch {
    return { name: `uid ${uid}`, uid };
  }
}

function parseWorkers(value: string): number | 'auto' {
  if (value === 'auto') return 'auto';
  if (!/^\d{1,2}$/.test(value) || Number(value) < 1 || Number(value) > MAX_WORKERS) {
    throw new InvalidArgumentError(`must be an integer from 1 to ${MAX_WORKERS}, or auto (one per core)`);
  }
  return Number(value);
}

function parsePort(value: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65_535) throw new InvalidArgumentError('must be an integer from 0 to 65535');
  return Number(value);
}

function fail(message: string, code: number): never {
  process.stderr.write(`gatehouse: ${message}\n`);
  process.exit(code);
}

/** Writes a line to stderr, which may be a closed pipe too: a failure there must not turn into a crash. */
function note(message: string): void {
  if (process.stderr.listenerCount('error') === 0) process.stderr.on('error', () => undefined);
  process.stderr.write(`gatehouse: ${message}\n`);
}

function errnoCode(error: unknown): string {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : 'EIO';
}

function outputErrorText(error: unknown): string {
  const code = errnoCode(error);
  return code === 'EPIPE' ? 'EPIPE: the reading end of the pipe was closed' : code;
}

// A reader that goes away (`| head`, a closed pager) is a normal event, not a crash: the command ends with exit 1 so a
// script sees that its output is incomplete. process.stdout is made only for commands that write to it: creating it
// on a pipe makes fd 1 non-blocking, which `serve`'s log writer on the same fd must not see.
let stdoutWatched = false;
let stdoutFailed = false;

function stdoutError(error: unknown): void {
  if (stdoutFailed) return;
  stdoutFailed = true;
  // A reader that left (`| head`) is told nothing it would not see anyway: the command ends quietly, but not with 0.
  // Any other write error is worth a line.
  if (errnoCode(error) !== 'EPIPE') note(`output could not be written (${outputErrorText(error)})`);
  // The command still finishes (a store is closed, not abandoned mid-way); the process then ends with 1.
  process.exitCode = EXIT.failure;
}

function watchStdout(): void {
  if (stdoutWatched) return;
  stdoutWatched = true;
  process.stdout.on('error', stdoutError);
}

/** process.exit, except that a success whose output was lost is a failure. */
function exit(code: number): never {
  // A failed write marks the stream at once, but its 'error' event would come only on a later tick, after this exit.
  const pending = stdoutWatched ? process.stdout.errored : null;
  if (pending !== null) stdoutError(pending);
  process.exit(code === EXIT.ok && stdoutFailed ? EXIT.failure : code);
}

/** GATEHOUSE_DATABASE_URL: the PostgreSQL store, overriding the config file's (an empty value is unset). */
function databaseUrl(): string | undefined {
  return process.env['GATEHOUSE_DATABASE_URL'] || undefined;
}

/** GATEHOUSE_REDIS_URL: the shared limiter store, overriding the config file's redis.url (an empty value is unset). */
function redisUrl(): string | undefined {
  return process.env['GATEHOUSE_REDIS_URL'] || undefined;
}

/** What the environment overrides in every config file a command reads: the stores' URLs. */
function environmentOverrides(): ConfigOverrides {
  const url = databaseUrl();
  const redis = redisUrl();
  return { ...(url !== undefined ? { databaseUrl: url } : {}), ...(redis !== undefined ? { redisUrl: redis } : {}) };
}

/**
 * What `serve` refuses before it starts, checked without starting: the file (schema, references, the environment's
 * overrides) and, unless they are made at start (tls.dev_certificates), the TLS files. `config check` and `reload`
 * report the problems each its own way.
 */
function checkConfigFile(file: string, dataDir?: string): { readonly config: Config } | { readonly problems: readonly string[]; readonly message: string } {
  try {
    const config = configFromText(readConfigText(file), file, { ...environmentOverrides(), ...(dataDir !== undefined ? { dataDir } : {}) });
    if (!config.tls.dev_certificates) readTlsMaterial(config.tls);
    return { config };
  } catch (error) {
    if (error instanceof ConfigError) return { problems: error.problems, message: error.message };
    if (error instanceof TlsFileError) return { problems: [error.message], message: `TLS file ${error.message}` };
    throw error;
  }
}

/** A server that cannot be reached is 69 (EX_UNAVAILABLE); any other store failure, a local file's too, is 1. */
function storeExit(backend: 'sqlite' | 'postgres', error: StoreError): number {
  return backend === 'postgres' && error.code === 'unavailable' ? EXIT.unavailable : EXIT.failure;
}

/** This process is a worker the primary of `serve --workers N` started (node:cluster), with its number. */
function workerRole(): { readonly number: number; readonly count: number } | undefined {
  if (!cluster.isWorker) return undefined;
  const number = Number(process.env['GATEHOUSE_WORKER']);
  const count = Number(process.env['GATEHOUSE_WORKERS']);
  return Number.isInteger(number) && Number.isInteger(count) && number >= 1 && number <= count ? { number, count } : undefined;
}

/** `auto`: one worker per core this process may use (at most MAX_WORKERS). */
function workerCount(workers: number | 'auto'): number {
  return workers === 'auto' ? Math.min(availableParallelism(), MAX_WORKERS) : workers;
}

async function serve(options: { config: string; port?: number; adminPort?: number; host?: string; data?: string; workers?: number | 'auto' }): Promise<void> {
  let config: Config;
  let configText: string;
  let fromPrimary: WorkerStart | undefined;
  const role = workerRole();
  // The same overrides for the text read at start and for every reload.
  const overrides: ConfigOverrides = {
    ...environmentOverrides(),
    ...(options.port !== undefined ? { port: options.port } : {}),
    ...(options.adminPort !== undefined ? { adminPort: options.adminPort } : {}),
    ...(options.host !== undefined ? { host: options.host } : {}),
    ...(options.data !== undefined ? { dataDir: options.data } : {}),
  };
  const parse = (text: string): Config => configFromText(text, options.config, overrides);
  // A worker takes each configuration its primary re-read on SIGHUP (the latest, also one that came while it was starting).
  let reloadedText: string | undefined;
  let applyReload: ((text: string) => void) | undefined;
  if (role !== undefined) {
    onConfigReload((text) => {
      if (applyReload !== undefined) applyReload(text);
      else reloadedText = text;
    });
  }
  try {
    // A worker runs the text its primary read: a file edited since cannot make workers of one gateway differ.
    fromPrimary = role === undefined ? undefined : await startFromPrimary().catch((error: Error) => fail(error.message, EXIT.software));
    configText = fromPrimary?.configText ?? readConfigText(options.config);
    config = parse(configText);
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message, EXIT.config);
    throw error;
  }
  const workers = role === undefined ? workerCount(options.workers ?? config.server.workers) : role.count;
  // Log lines are buffered up to 4000 bytes and flushed at least every 250 ms: one write per batch instead of one per line.
  // A write never exceeds 4096 bytes (PIPE_BUF) and holds whole lines, so workers sharing one pipe never interleave a line.
  const destination = pino.destination({ sync: false, minLength: 4000, maxWrite: 4096 });
  const base = role === undefined ? { service: 'gatehouse', ...(workers > 1 ? { role: 'primary' } : {}) } : { service: 'gatehouse', worker: role.number };
  const log: Logger = pino({ level: config.log.level, base }, destination);
  setInterval(() => destination.flush(), 250).unref();
  const flushLogs = (): void => {
    try {
      destination.flushSync();
    } catch {
      // Nothing left to do with a broken stdout at exit.
    }
  };
  // A fault that escaped every handler leaves the process in an unknown state: log it and exit for the supervisor (REL-08).
  const crash = (kind: string) => (error: unknown) => {
    log.fatal({ err: error instanceof Error ? { name: error.name, message: error.message, stack: error.stack } : String(error) }, kind);
    flushLogs();
    process.exit(EXIT.software);
  };
  process.on('uncaughtException', crash('uncaught exception'));
  process.on('unhandledRejection', crash('unhandled rejection'));

  if (role === undefined && workers > 1) {
    // The primary: it supervises and counts the workers' limits; the workers serve (each runs this command again).
    // What the primary re-reads on SIGHUP goes to every worker, which records whether it took it; the primary adopts it
    // for replacements only when the workers will have (same text, same overrides, same check), so they never differ.
    let inForce = config;
    supervise({
      workers,
      configText,
      // The primary is what `gatehouse reload` signals: it passes SIGHUP on to every worker.
      onUp: () => writePidFile(config),
      rereadConfig: () => {
        const text = readConfigText(options.config);
        try {
          const next = parse(text);
          if (restartOnlyChanges(inForce, next).length > 0) return { text, accepted: false };
          inForce = next;
          return { text, accepted: true };
        } catch (error) {
          if (error instanceof ConfigError) return { text, accepted: false };
          throw error;
        }
      },
      ticketKeyRotationMs: config.tls.ticket_key_rotation_s * 1000,
      log,
      drainLimitMs: config.shutdown.readiness_grace_ms + config.shutdown.drain_timeout_ms + 15_000,
      codes: { failure: EXIT.failure, killed: EXIT.software },
      exit: (code) => {
        flushLogs();
        process.exit(code);
      },
    });
    return;
  }

  // The known start-up failures, each with its exit code; anything else is a bug and keeps its stack (exit 70).
  function startFailed(error: unknown): never {
    if (error instanceof ConfigError) fail(error.message, EXIT.config);
    // A wrong or insecure master key is a configuration problem; a store that cannot be opened is a runtime failure.
    if (error instanceof MasterKeyError || error instanceof SigningKeyError) fail(error.message, EXIT.config);
    if (error instanceof StoreError) fail(`credential store: ${error.message}`, storeExit(config.store.backend, error));
    // Before the errno checks: its code (ENOENT, EACCES) is about a directory, not a TLS file.
    if (error instanceof DirectoryError) fail(error.message, EXIT.failure);
    if (error instanceof AuditLogError) fail(error.message, EXIT.failure);
    // The audit key opens only under the master key it was sealed with: the configuration (or the key file) is wrong.
    if (error instanceof AuditKeyError) fail(error.message, EXIT.config);
    if (error instanceof TlsFileError) fail(`TLS file ${error.message}`, EXIT.config);
    throw error;
  }

  // Stops taking requests, drains, and exits with `exitCode`. Before the gateway is listening there is nothing to drain:
  // the request is kept and carried out as soon as start-up completes.
  let gateway: Gateway | undefined;
  let started = false;
  let stopRequest: { exitCode: number; fields: Record<string, string> } | undefined;
  let stopping = false;
  const stop = (exitCode: number, fields: Record<string, string>): void => {
    stopRequest ??= { exitCode, fields };
    if (stopping || gateway === undefined || !started) return;
    stopping = true;
    log.info(stopRequest.fields, 'draining');
    const code = stopRequest.exitCode;
    gateway
      .stop()
      .then(() => {
        log.info('stopped');
        flushLogs();
        process.exit(code);
      })
      .catch(crash('shutdown failed'));
  };

  // pino stops writing after EPIPE (`serve | head`), which would leave a gateway running with no operational log:
  // it drains and exits 1 instead, as a process killed by SIGPIPE would have, but without dropping admitted requests.
  destination.on('error', (error: unknown) => {
    if (stopRequest !== undefined) return;
    note(`log output could not be written (${outputErrorText(error)}); draining and stopping`);
    stop(EXIT.failure, { reason: 'log output closed' });
  });

  // Installed before start-up: a SIGTERM that comes as soon as the listening line is out (a supervisor's quick restart)
  // still drains and closes the audit log, instead of killing the process with the default action.
  process.on('SIGTERM', () => stop(EXIT.ok, { signal: 'SIGTERM' }));
  process.on('SIGINT', () => stop(EXIT.ok, { signal: 'SIGINT' }));

  // The workers' shared session-ticket keys: the latest the primary sent, also while this worker was starting.
  let ticketKeys = fromPrimary?.ticketKeys;
  if (role !== undefined) {
    onTicketKeys((keys) => {
      ticketKeys = keys;
      gateway?.setTicketKeys(keys);
    });
  }
  try {
    gateway = await Gateway.create(config, {
      log,
      masterKey: process.env[MASTER_KEY_ENV],
      ...(role !== undefined && ticketKeys !== undefined ? { worker: { ...role, channel: channelToPrimary(), ticketKeys } } : {}),
    });
    if (ticketKeys !== undefined) gateway.setTicketKeys(ticketKeys);
  } catch (error) {
    startFailed(error);
  }
  try {
    await gateway.start();
    started = true;
    // What `gatehouse reload` signals: written once up, so a start that fails leaves nothing behind in data_dir.
    if (role === undefined) writePidFile(config);
    destination.flush();
  } catch (error) {
    // Nothing is served: the store and the audit chain (its lock) are closed before the process exits.
    await gateway.abandon().catch((closing: unknown) => log.error({ err: (closing as Error).message }, 'closing after a failed start failed'));
    // Only what listen() reports is read as a listen failure: the same codes from opening files mean something else.
    const code = (error as NodeJS.ErrnoException).code;
    const at = error instanceof AdminListenError ? error : config.server;
    const listen = code === undefined ? undefined : listenFailure(at.host, at.port, code);
    if (listen !== undefined) fail(listen, EXIT.failure);
    startFailed(error);
  }

  const running = gateway;
  // SIGHUP: the certificate and key files, and the configuration's routes, upstreams and quotas (a worker's configuration
  // comes from its primary, which re-reads the file).
  process.on('SIGHUP', () => {
    try {
      running.reloadCertificates();
    } catch (error) {
      // The old certificate stays in use; a bad file never takes the listener down.
      log.error({ err: (error as Error).message }, 'certificate reload failed; keeping the current certificate');
    }
    if (role === undefined) void running.reload(() => parse(readConfigText(options.config)));
  });
  if (role !== undefined) {
    applyReload = (text) => void running.reload(() => parse(text));
    if (reloadedText !== undefined) applyReload(reloadedText);
  }
  // A stop asked for during start-up (a signal, the log output closed) is carried out now that there is something to drain.
  if (stopRequest !== undefined) stop(stopRequest.exitCode, stopRequest.fields);
}

/**
 * `gatehouse reload`: checks the file as `config check` does (an invalid one is never sent), signals the gateway running
 * on its data directory, and reports what the gateway recorded: reloaded (0), refused (1, the configuration in force
 * stays), no gateway running (66), no answer in time (69).
 */
async function reloadCommand(options: { config: string; data?: string; timeout: number }): Promise<void> {
  const checked = checkConfigFile(options.config, options.data);
  if (!('config' in checked)) fail(`${checked.message}\nnot reloaded: the configuration in force stays`, EXIT.config);
  const result = await reloadRunningGateway(checked.config, options.timeout);
  if (result.outcome === 'no_gateway') fail(result.reason, EXIT.noInput);
  if (result.outcome === 'no_answer') fail(`the gateway recorded no reload within ${options.timeout / 1000}s (see its log)`, EXIT.unavailable);
  if (result.outcome === 'refused') fail(`reload refused: ${result.problems}; the configuration in force stays`, EXIT.failure);
  process.stdout.write(`reloaded ${options.config}: ${JSON.stringify(result.fields)}\n`);
}

/**
 * `gatehouse config check FILE`: what `serve` would check before serving — the schema, every cross-reference and the TLS
 * files — without binding, opening a store or writing anything. Exit 0 when it would start; 78 with every problem.
 */
function configCheck(file: string, options: { json?: boolean }): void {
  const checked = checkConfigFile(file);
  if (!('config' in checked)) {
    if (options.json === true) process.stdout.write(`${JSON.stringify({ file, valid: false, problems: checked.problems })}\n`);
    fail(checked.message, EXIT.config);
  }
  const { config } = checked;
  const summary = {
    file,
    valid: true,
    routes: config.routes.length,
    upstreams: Object.keys(config.upstreams).length,
    issuer: config.issuer !== undefined,
    admin: config.admin !== undefined,
    store: config.store.backend,
  };
  process.stdout.write(
    options.json === true
      ? `${JSON.stringify(summary)}\n`
      : `${file}: valid (${summary.routes} routes, ${summary.upstreams} upstreams, issuer ${summary.issuer ? 'on' : 'off'}, admin listener ${summary.admin ? 'on' : 'off'}, ${summary.store} store)\n`,
  );
}

async function certsInit(options: { dir: string; force?: boolean }): Promise<void> {
  try {
    const { created, paths } = await initDevCertificates(resolve(options.dir), { force: options.force === true });
    process.stdout.write(
      created ? `created development CA and certificates in ${paths.dir}\n` : `certificates already present in ${paths.dir} (use --force to replace them)\n`,
    );
  } catch (error) {
    fail((error as Error).message, EXIT.failure);
  }
}

export function buildProgram(): Command {
  const program = new Command('gatehouse')
    .description(
      'Security-hardened, authenticated service gateway: terminates TLS, authenticates, authorizes and rate-limits every request, ' +
        'proxies it to a protected service, and records each decision in an audit log. Also issues OAuth client credentials.',
    )
    .version(packageVersion(), '-V, --version', 'print the version of gatehouse')
    // One line of help after a usage error, not the whole --help text: the error itself says what was wrong.
    .showHelpAfterError('(run the command with --help for its usage)')
    .addHelpText('after', PROGRAM_HELP)
    // Help and version text go through the watched stdout, so a closed pipe ends them with exit 1 instead of a crash.
    .configureOutput({
      writeOut: (text) => {
        watchStdout();
        process.stdout.write(text);
      },
    })
    .exitOverride();
  // Every command but `serve` may write to process.stdout (serve logs through pino on fd 1 and must not create it).
  program.hook('preAction', (_program, command) => {
    if (command.name() !== 'serve') watchStdout();
  });

  program
    .command('serve')
    .description(
      'run the gateway: terminate TLS, authenticate, authorize and rate-limit each request, then proxy it or answer it; ' +
        'JSON logs go to stdout, decisions to the audit log in data_dir',
    )
    .option('-c, --config <file>', 'YAML configuration file', DEFAULT_CONFIG)
    .option('-p, --port <n>', 'listen port (overrides server.port; 0 = any free port)', parsePort)
    .option('--admin-port <n>', 'admin listener port, when the config has an admin section (overrides admin.port; 0 = any free port)', parsePort)
    .option('-H, --host <address>', 'listen address (overrides server.host)')
    .option('-d, --data <dir>', 'data directory (overrides data_dir)')
    .option('-w, --workers <n>', `worker processes serving the port, 1 to ${MAX_WORKERS} or auto (overrides server.workers)`, parseWorkers)
    .addHelpText('after', SERVE_HELP)
    .action(serve);

  program
    .command('reload')
    .description('reload the running gateway on this data directory (SIGHUP) with the config file, after checking it, and report the outcome')
    .option('-c, --config <file>', 'YAML configuration file', DEFAULT_CONFIG)
    .option('-d, --data <dir>', 'data directory (overrides data_dir)')
    .option(
      '--timeout <seconds>',
      'how long to wait for the outcome',
      (value: string) => {
        const seconds = Number(value);
        if (!Number.isInteger(seconds) || seconds < 1 || seconds > 300) throw new InvalidArgumentError('must be 1 to 300');
        return seconds * 1000;
      },
      10_000,
    )
    .action(reloadCommand);

  program
    .command('config')
    .description('the configuration file')
    .command('check')
    .description('validate a configuration file as serve would (schema, references, TLS files) without serving; exit 0 or 78')
    .argument('[file]', 'YAML configuration file', DEFAULT_CONFIG)
    .option('--json', 'print one JSON object')
    .action(configCheck);

  const certs = program.command('certs').description('development certificates');
  certs
    .command('init')
    .description('create a development CA, a server certificate for localhost/127.0.0.1/::1 and one client certificate')
    .option('--dir <dir>', 'target directory', resolve(PACKAGE_ROOT, 'certs'))
    .option('--force', 'replace existing files')
    .addHelpText('after', CERTS_INIT_HELP)
    .action(certsInit);

  const user = operatingSystemUser();
  const adminContext: AdminContext = {
    defaultConfig: DEFAULT_CONFIG,
    masterKey: process.env[MASTER_KEY_ENV],
    databaseUrl: databaseUrl(),
    // The account behind sudo is who really ran the command; both are recorded. SUDO_USER is only an environment
    // variable, so it is believed only where sudo would have set it: in a root process.
    actor: adminActor(user.name, user.uid, user.uid === 0 ? process.env['SUDO_USER'] : undefined),
    exit: EXIT,
    fail,
    warn: (message: string) => note(`warning: ${message}`),
  };
  registerAdminCommands(program, adminContext);
  registerStoreCommands(program, adminContext);
  registerAuditCommands(program, { defaultConfig: DEFAULT_CONFIG, exit: EXIT, fail });
  return program;
}

async function main(): Promise<void> {
  try {
    const program = buildProgram();
    await program.parseAsync(protectDashIds(program, process.argv));
  } catch (error) {
    if (error instanceof CommanderError) {
      exit(error.exitCode === 0 ? EXIT.ok : EXIT.usage);
    }
    throw error;
  }
}

await main();
