// The built `gatehouse` command, as an operator runs it: one-shot commands (spawnSync) and `serve` as a process of its own.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { expect } from 'vitest';

export const CLI = join(import.meta.dirname, '../../dist/src/cli/main.js');

export interface CliResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `gatehouse ARGS` to completion (20 s at most). */
export function runCli(args: readonly string[], env: NodeJS.ProcessEnv = process.env): CliResult {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000, env });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

export interface ServeProcess {
  readonly child: ChildProcess;
  readonly port: number;
  /** Every stdout line so far (JSON log lines). */
  readonly lines: string[];
  /** SIGTERM, and waits for the exit. */
  stop(): Promise<void>;
}

/** Starts `gatehouse serve ARGS` and resolves with the port from its "listening" log line. */
export async function serveCli(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<ServeProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const lines: string[] = [];
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => stderr.push(line));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line; got:\n${lines.join('\n')}\n${stderr.join('\n')}`)), 20_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      lines.push(line);
      const parsed = JSON.parse(line) as { msg?: string; port?: number };
      if (parsed.msg === 'gatehouse listening' && parsed.port !== undefined) {
        clearTimeout(timer);
        resolve(parsed.port);
      }
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${lines.join('\n')}\n${stderr.join('\n')}`)));
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  return {
    child,
    port,
    lines,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** `gatehouse audit verify --json` as read back: every chain's report, and the notes said once per run. */
export interface VerifyJson {
  readonly ok: boolean;
  readonly notes: string[];
  readonly chains: Array<{
    readonly instance: string;
    readonly records: number;
    readonly unsigned: { readonly records: number; readonly fromSeq: number | null; readonly toSeq: number | null };
    readonly break?: { readonly kind: string; readonly segment: string; readonly line: number; readonly seq: number | null; readonly detail: string };
    readonly notes: string[];
  }>;
}

/** Runs `gatehouse audit verify --dir DIR --json ARGS`; `report` is undefined when it printed nothing (a usage error, 66). */
export function auditVerify(dir: string, ...args: string[]): CliResult & { readonly report: VerifyJson } {
  const result = runCli(['audit', 'verify', '--dir', dir, '--json', ...args]);
  return { ...result, report: (result.stdout === '' ? undefined : JSON.parse(result.stdout)) as VerifyJson };
}

/**
 * The admin commands against one config file, as an operator runs them: GATEHOUSE_MASTER_KEY is never inherited from the
 * test's environment (the key file in data_dir is used unless `env` sets it). `ok` expects exit 0 and nothing on stderr;
 * `json` adds --json and parses the output.
 */
export function adminCli(configFile: string): {
  run(args: readonly string[], env?: Readonly<Record<string, string>>): CliResult;
  ok(args: readonly string[]): string;
  json<T>(args: readonly string[]): T;
} {
  const run = (args: readonly string[], env: Readonly<Record<string, string>> = {}): CliResult => {
    const { GATEHOUSE_MASTER_KEY: _ignored, ...inherited } = process.env;
    return runCli([...args, '--config', configFile], { ...inherited, ...env });
  };
  const ok = (args: readonly string[]): string => {
    const result = run(args);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    return result.stdout;
  };
  return { run, ok, json: <T>(args: readonly string[]): T => JSON.parse(ok([...args, '--json'])) as T };
}
