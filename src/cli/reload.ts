// `gatehouse reload`: the SIGHUP reload, with its outcome. The file is checked here first (an invalid one is never sent:
// the gateway would refuse it anyway, and the operator sees why at once); the running gateway is found by the pid file
// `serve` keeps in its data directory; the answer is read from the audit chain, where the gateway records every reload
// (config_reloaded, or config_reload_refused with its problems).
import { closeSync, constants as fsConstants, existsSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { queryRecords } from '../audit/query.js';
import { makeDirectory } from '../lib/make-directory.js';
import type { Config } from '../config/schema.js';

/** `serve` writes its pid here once up (the single process, or the primary of --workers N) and removes it when it exits. */
export function pidFile(config: Pick<Config, 'data_dir'>): string {
  return path.join(config.data_dir, 'gatehouse.pid');
}

/** Records this process as the gateway of its data directory until it exits. */
export function writePidFile(config: Pick<Config, 'data_dir'>): void {
  const file = pidFile(config);
  try {
    // Made by the start already (the store, the audit log); a --workers primary holds neither, so it may be first.
    makeDirectory(config.data_dir, 0o700);
    const fd = openSync(file, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_NOFOLLOW, 0o600);
    try {
      writeSync(fd, `${process.pid}\n`);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Without it only `gatehouse reload` cannot find this gateway; `kill -HUP` still works. Nothing else depends on it.
    return;
  }
  process.once('exit', () => {
    try {
      // Only our own: a gateway started since on the same directory keeps its file.
      if (readFileSync(file, 'utf8').trim() === String(process.pid)) unlinkSync(file);
    } catch {
      // Already gone.
    }
  });
}

export type ReloadOutcome =
  | { readonly outcome: 'reloaded'; readonly fields: Readonly<Record<string, unknown>> }
  | { readonly outcome: 'refused'; readonly problems: string }
  | { readonly outcome: 'no_gateway'; readonly reason: string }
  | { readonly outcome: 'no_answer' };

/** The running gateway's pid, if the pid file names a live `gatehouse serve` process. */
function runningGateway(config: Pick<Config, 'data_dir'>): number | { readonly reason: string } {
  const file = pidFile(config);
  if (!existsSync(file)) return { reason: `no gateway is running on ${config.data_dir} (no ${file})` };
  const pid = Number(readFileSync(file, 'utf8').trim());
  if (!Number.isSafeInteger(pid) || pid <= 1) return { reason: `${file} does not hold a process id` };
  try {
    process.kill(pid, 0);
  } catch {
    return { reason: `the gateway of ${file} (pid ${pid}) is not running` };
  }
  // A pid file outliving its process may name another program now: signal only a gatehouse serve (where /proc tells).
  const cmdline = `/proc/${pid}/cmdline`;
  if (existsSync(cmdline)) {
    const args = readFileSync(cmdline, 'utf8').split('\0');
    if (!args.includes('serve')) return { reason: `pid ${pid} of ${file} is not a gatehouse serve process` };
  }
  return pid;
}

/** Sends SIGHUP to the gateway of `config`'s data directory and waits (up to `timeoutMs`) for its recorded outcome. */
export async function reloadRunningGateway(config: Config, timeoutMs: number): Promise<ReloadOutcome> {
  const pid = runningGateway(config);
  if (typeof pid !== 'number') return { outcome: 'no_gateway', reason: pid.reason };
  // Records of this reload are written after the signal; a second of slack for clocks of the same host is plenty.
  const since = Date.now() - 1000;
  // Reloads recorded before the signal (an earlier reload inside the slack) are not this one's outcome.
  const key = (record: Readonly<Record<string, unknown>>): string => `${String(record['instance'])}\n${String(record['seq'])}`;
  const earlier = new Set(existsSync(config.audit.dir) ? [...queryRecords(config.audit.dir, { type: 'event', since })].map(key) : []);
  process.kill(pid, 'SIGHUP');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    if (!existsSync(config.audit.dir)) continue;
    for (const record of queryRecords(config.audit.dir, { type: 'event', since })) {
      if (earlier.has(key(record))) continue;
      if (record['type'] === 'config_reloaded') {
        const { seq: _seq, ts: _ts, type: _type, instance: _instance, boot_id: _boot, prev: _prev, hash: _hash, ...fields } = record;
        return { outcome: 'reloaded', fields };
      }
      if (record['type'] === 'config_reload_refused') return { outcome: 'refused', problems: String(record['problems'] ?? '') };
    }
  }
  return { outcome: 'no_answer' };
}
