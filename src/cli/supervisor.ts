// `serve --workers N`: the primary. It serves no request. It starts N workers on one port (node:cluster hands each
// accepted connection to one of them), counts their limits when no Redis is configured, replaces a worker that dies, stops
// a gateway whose workers keep dying, and passes SIGHUP (with the configuration file re-read) and SIGTERM on to every
// worker.
//
// Worker 1 starts alone and the others once it listens: whatever a first start creates (the master key, the audit key,
// the store's schema, development certificates) is created once, never raced. A worker that fails before the gateway is
// up fails the start, with its exit code and its own message on stderr.
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { ClusterLimiterHost, type LimiterChannel } from '../quota/cluster.js';

/** Worker exits within CRASH_WINDOW_MS that stop the gateway instead of another replacement. */
export const CRASH_LIMIT = 5;
export const CRASH_WINDOW_MS = 30_000;

export interface SupervisorOptions {
  readonly workers: number;
  /** The config file's text as the primary read it: every worker, a replacement too, runs this one (until a reload). */
  readonly configText: string;
  /**
   * On SIGHUP: the config file's text again, for every worker to reload, and whether the workers will accept it (a
   * replacement then starts with it). Throws ConfigError when the file cannot be read.
   */
  readonly rereadConfig: () => { readonly text: string; readonly accepted: boolean };
  /** How often the session-ticket keys every worker shares are replaced (tls.ticket_key_rotation_s). */
  readonly ticketKeyRotationMs: number;
  readonly log: Logger;
  /** How long workers may take to drain after SIGTERM before they are killed. */
  readonly drainLimitMs: number;
  /** Once every worker listens (the gateway is up). */
  readonly onUp?: () => void;
  /** Ends the primary (logs flushed) with this code. */
  readonly exit: (code: number) => void;
  /** Exit codes: `failure` when a worker failed its drain; `killed` for workers that keep dying, or one that failed to start, by a signal. */
  readonly codes: { readonly failure: number; readonly killed: number };
}

/** The IPC channel to one worker, as the limiter host sees it. A message to a worker that is gone is dropped. */
function channelTo(worker: Worker): LimiterChannel {
  return {
    send: (message) => {
      if (!worker.isConnected()) return false;
      worker.send(message, () => undefined);
      return true;
    },
    onMessage: (listener) => worker.on('message', listener),
    onClose: (listener) => worker.once('disconnect', listener),
  };
}

interface ConfigMessage {
  readonly gatehouse: 'config';
  readonly text: string;
  /** The session-ticket keys, base64: a session made on one worker resumes on any. */
  readonly ticketKeys: string;
}

interface ConfigReloadMessage {
  readonly gatehouse: 'config.reload';
  readonly text: string;
}

interface TicketKeysMessage {
  readonly gatehouse: 'tls.ticket-keys';
  readonly keys: string;
}

/** What a worker gets from its primary before it starts. */
export interface WorkerStart {
  readonly configText: string;
  readonly ticketKeys: Buffer;
}

const field = (message: unknown, name: string): unknown =>
  typeof message === 'object' && message !== null && name in message ? (message as Record<string, unknown>)[name] : undefined;

function isConfigRequest(message: unknown): boolean {
  return typeof message === 'object' && message !== null && 'gatehouse' in message && message.gatehouse === 'config?';
}

/** In a worker: the config file's text the primary read, and the ticket keys (rejects if none come within `timeoutMs`). */
export function startFromPrimary(timeoutMs = 10_000): Promise<WorkerStart> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      process.off('message', answer);
      reject(new Error(`no configuration from the primary within ${timeoutMs} ms`));
    }, timeoutMs);
    const answer = (message: unknown): void => {
      const [gatehouse, text, keys] = [field(message, 'gatehouse'), field(message, 'text'), field(message, 'ticketKeys')];
      if (gatehouse !== 'config' || typeof text !== 'string' || typeof keys !== 'string') return;
      clearTimeout(timer);
      process.off('message', answer);
      resolve({ configText: text, ticketKeys: Buffer.from(keys, 'base64') });
    };
    process.on('message', answer);
    process.send?.({ gatehouse: 'config?' });
  });
}

/** In a worker: each replacement of the shared session-ticket keys. */
export function onTicketKeys(listener: (keys: Buffer) => void): void {
  process.on('message', (message: unknown) => {
    const keys = field(message, 'keys');
    if (field(message, 'gatehouse') === 'tls.ticket-keys' && typeof keys === 'string') listener(Buffer.from(keys, 'base64'));
  });
}

/** In a worker: each configuration text the primary re-read on SIGHUP. */
export function onConfigReload(listener: (text: string) => void): void {
  process.on('message', (message: unknown) => {
    const text = field(message, 'text');
    if (field(message, 'gatehouse') === 'config.reload' && typeof text === 'string') listener(text);
  });
}

/** The worker's side of the channel: `process`, connected to the primary. */
export function channelToPrimary(): LimiterChannel {
  return {
    send: (message) => {
      if (!process.connected || process.send === undefined) return false;
      process.send(message, undefined, undefined, () => undefined);
      return true;
    },
    onMessage: (listener) => process.on('message', listener),
    onClose: (listener) => process.once('disconnect', listener),
  };
}

export function supervise(options: SupervisorOptions): void {
  const { workers: count, log } = options;
  const limits = new ClusterLimiterHost();
  const running = new Map<number, Worker>();
  const listened = new Set<number>();
  /** Workers whose gateway is up: only they have their signal handlers (a SIGHUP before that would kill a worker). */
  const serving = new Set<Worker>();
  const recentExits: number[] = [];
  let up = false;
  let stopping = false;
  let exitCode = 0;
  let killTimer: NodeJS.Timeout | undefined;
  // One set of session-ticket keys for every worker, replaced for all at once.
  let ticketKeys = randomBytes(48);
  const rotation = setInterval(() => {
    ticketKeys = randomBytes(48);
    const message: TicketKeysMessage = { gatehouse: 'tls.ticket-keys', keys: ticketKeys.toString('base64') };
    for (const worker of running.values()) if (worker.isConnected()) worker.send(message, () => undefined);
  }, options.ticketKeyRotationMs);
  rotation.unref();

  // The text every worker runs; a SIGHUP that re-reads an acceptable file replaces it.
  let configText = options.configText;

  const start = (number: number): Worker => {
    const worker = cluster.fork({ GATEHOUSE_WORKER: String(number), GATEHOUSE_WORKERS: String(count) });
    const forget = limits.serve(channelTo(worker));
    // A worker asks for the configuration once it listens for the answer (a message sent earlier could find no listener).
    worker.on('message', (message: unknown) => {
      if (isConfigRequest(message)) {
        const answer: ConfigMessage = { gatehouse: 'config', text: configText, ticketKeys: ticketKeys.toString('base64') };
        worker.send(answer, () => undefined);
      }
    });
    running.set(number, worker);
    log.info({ worker: number, pid: worker.process.pid }, 'worker started');
    worker.on('listening', (address) => {
      serving.add(worker);
      if (listened.has(number)) return;
      listened.add(number);
      // The others start once the first has created whatever a first start creates (unless the gateway is stopping).
      if (number === 1 && !up && !stopping) for (let n = 2; n <= count; n++) start(n);
      if (!up && listened.size === count) {
        up = true;
        log.info({ host: address.address, port: address.port, workers: count }, 'gatehouse listening');
        options.onUp?.();
      }
    });
    worker.once('exit', (code, signal) => {
      forget();
      serving.delete(worker);
      if (running.get(number) === worker) running.delete(number);
      exited(number, worker, code, signal);
    });
    return worker;
  };

  const exited = (number: number, worker: Worker, code: number | null, signal: string | null): void => {
    const fields = { worker: number, pid: worker.process.pid, code, signal };
    if (stopping) {
      log.info(fields, 'worker stopped');
      // A worker stopped by the SIGTERM before it could handle one (still starting) did nothing wrong.
      if (code !== 0 && signal !== 'SIGTERM') exitCode ||= options.codes.failure;
      if (running.size === 0) finish();
      return;
    }
    const failure = code !== null && code !== 0 ? code : options.codes.killed;
    if (!up) {
      // The gateway never came up: the worker has said why on stderr, and its exit code says what kind of failure it was.
      log.error(fields, 'worker failed to start; stopping');
      stop(failure, { reason: 'a worker failed to start' });
      return;
    }
    const now = Date.now();
    recentExits.push(now);
    while ((recentExits[0] ?? now) <= now - CRASH_WINDOW_MS) recentExits.shift();
    if (recentExits.length >= CRASH_LIMIT) {
      log.fatal(fields, `workers exited ${recentExits.length} times in ${CRASH_WINDOW_MS / 1000} s; stopping instead of restarting them again`);
      process.stderr.write(
        `gatehouse: workers exited ${recentExits.length} times in ${CRASH_WINDOW_MS / 1000} s (the last one, worker ${number}, with ` +
          `${code !== null ? `exit code ${code}` : `signal ${signal}`}); stopping\n`,
      );
      stop(failure, { reason: 'workers keep dying' });
      return;
    }
    log.warn(fields, 'worker exited; replacing it');
    const replacement = start(number);
    log.info({ worker: number, pid: replacement.process.pid, replaces: worker.process.pid }, 'worker replaced');
  };

  const stop = (code: number, fields: Record<string, string>): void => {
    if (stopping) return;
    stopping = true;
    exitCode = code;
    log.info({ ...fields, workers: running.size }, 'draining every worker');
    if (running.size === 0) {
      finish();
      return;
    }
    for (const worker of running.values()) worker.process.kill('SIGTERM');
    killTimer = setTimeout(() => {
      log.error({ workers: running.size }, 'workers still running after the drain limit; killing them');
      for (const worker of running.values()) worker.process.kill('SIGKILL');
    }, options.drainLimitMs);
  };

  const finish = (): void => {
    clearTimeout(killTimer);
    clearInterval(rotation);
    log.info({ code: exitCode }, 'stopped');
    options.exit(exitCode);
  };

  process.on('SIGTERM', () => stop(0, { signal: 'SIGTERM' }));
  process.on('SIGINT', () => stop(0, { signal: 'SIGINT' }));
  process.on('SIGHUP', () => {
    let reread: { readonly text: string; readonly accepted: boolean } | undefined;
    try {
      reread = options.rereadConfig();
    } catch (error) {
      log.error({ err: (error as Error).message }, 'configuration file not read; every worker keeps the configuration in force');
    }
    if (reread !== undefined) {
      // Every worker gets it, also one still starting, and records whether it took it (each decides as this one did).
      if (reread.accepted) configText = reread.text;
      log.info({ workers: running.size, accepted: reread.accepted }, 'passing the configuration file as re-read to every worker');
      const message: ConfigReloadMessage = { gatehouse: 'config.reload', text: reread.text };
      for (const worker of running.values()) if (worker.isConnected()) worker.send(message, () => undefined);
    }
    log.info({ workers: serving.size }, 'passing SIGHUP (certificate reload) to every worker');
    for (const worker of serving) worker.process.kill('SIGHUP');
  });
  start(1);
}
