#!/usr/bin/env node
// The `gatehouse` command: serve, certs, clients, keys. The only module that reads the environment, argv and signals.
import 'reflect-metadata';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import { pino, type Logger } from 'pino';
import { ConfigError, loadConfigFile } from '../config/load.js';
import { Gateway } from '../gateway.js';
import { MASTER_KEY_ENV, MasterKeyError } from '../issuer/key-encryption.js';
import { SigningKeyError } from '../issuer/keys.js';
import { StoreError } from '../store/contract.js';
import { initDevCertificates } from '../tls/ca.js';
import { registerAdminCommands } from './admin.js';

/** sysexits(3): the exit codes scripts and supervisors understand. */
export const EXIT = { ok: 0, failure: 1, usage: 64, noInput: 66, software: 70, config: 78 } as const;

const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const DEFAULT_CONFIG = resolve(PACKAGE_ROOT, 'config/gatehouse.example.yaml');

function parsePort(value: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65_535) throw new InvalidArgumentError('must be an integer from 0 to 65535');
  return Number(value);
}

function fail(message: string, code: number): never {
  process.stderr.write(`gatehouse: ${message}\n`);
  process.exit(code);
}

async function serve(options: { config: string; port?: number; host?: string; data?: string }): Promise<void> {
  let config;
  try {
    config = loadConfigFile(options.config, {
      ...(options.port !== undefined ? { port: options.port } : {}),
      ...(options.host !== undefined ? { host: options.host } : {}),
      ...(options.data !== undefined ? { dataDir: options.data } : {}),
    });
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message, EXIT.config);
    throw error;
  }
  // Log lines are buffered up to 8 KiB and flushed at least every 250 ms: one write per batch instead of one per line.
  const destination = pino.destination({ sync: false, minLength: 8192 });
  const log: Logger = pino({ level: config.log.level, base: { service: 'gatehouse' } }, destination);
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

  let gateway: Gateway;
  try {
    gateway = await Gateway.create(config, { log, masterKey: process.env[MASTER_KEY_ENV] });
    await gateway.start();
    destination.flush();
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message, EXIT.config);
    // A wrong or insecure master key is a configuration problem; a store that cannot be opened is a runtime failure.
    if (error instanceof MasterKeyError || error instanceof SigningKeyError) fail(error.message, EXIT.config);
    if (error instanceof StoreError) fail(`credential store: ${error.message}`, EXIT.failure);
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') fail(`cannot listen on ${config.server.host}:${config.server.port} (${code})`, EXIT.failure);
    if (code === 'ENOENT') fail(`cannot read a TLS file: ${(error as Error).message}`, EXIT.config);
    throw error;
  }

  process.on('SIGHUP', () => {
    try {
      gateway.reloadCertificates();
    } catch (error) {
      // The old certificate stays in use; a bad file never takes the listener down.
      log.error({ err: (error as Error).message }, 'certificate reload failed; keeping the current certificate');
    }
  });
  let stopping = false;
  const shutdown = (signal: string) => () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'draining');
    gateway
      .stop()
      .then(() => {
        log.info('stopped');
        flushLogs();
        process.exit(EXIT.ok);
      })
      .catch(crash('shutdown failed'));
  };
  process.on('SIGTERM', shutdown('SIGTERM'));
  process.on('SIGINT', shutdown('SIGINT'));
}

async function certsInit(options: { dir: string; force?: boolean }): Promise<void> {
  try {
    const { created, paths } = await initDevCertificates(resolve(options.dir), { force: options.force === true });
    process.stdout.write(created ? `created development CA and certificates in ${paths.dir}\n` : `certificates already present in ${paths.dir} (use --force to replace them)\n`);
  } catch (error) {
    fail((error as Error).message, EXIT.failure);
  }
}

export function buildProgram(): Command {
  const program = new Command('gatehouse')
    .description('Security-hardened, authenticated service gateway')
    .showHelpAfterError()
    .exitOverride();

  program
    .command('serve')
    .description('run the gateway')
    .option('-c, --config <file>', 'YAML configuration file', DEFAULT_CONFIG)
    .option('-p, --port <n>', 'listen port (overrides server.port; 0 = any free port)', parsePort)
    .option('-H, --host <address>', 'listen address (overrides server.host)')
    .option('-d, --data <dir>', 'data directory (overrides data_dir)')
    .action(serve);

  const certs = program.command('certs').description('development certificates');
  certs
    .command('init')
    .description('create a development CA, a server certificate for localhost/127.0.0.1/::1 and one client certificate')
    .option('--dir <dir>', 'target directory', resolve(PACKAGE_ROOT, 'certs'))
    .option('--force', 'replace existing files')
    .action(certsInit);

  registerAdminCommands(program, { defaultConfig: DEFAULT_CONFIG, masterKey: process.env[MASTER_KEY_ENV], exit: EXIT, fail });
  return program;
}

async function main(): Promise<void> {
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      process.exit(error.exitCode === 0 ? EXIT.ok : EXIT.usage);
    }
    throw error;
  }
}

await main();
