// The bench's child processes: started and waited for by the port on their first JSON line, stopped and waited for (a
// gateway drains and closes its audit log first), and the scratch directory removed without ever crashing the bench.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { LoadOptions, LoadResult } from './load.js';

const HERE = dirname(fileURLToPath(import.meta.url));
let loads = 0;

/** Runs the load generator (bench/load.ts) in its own process and returns what it measured. */
export async function runLoad(work: string, options: LoadOptions): Promise<LoadResult> {
  const file = join(work, `load-${++loads}.json`);
  writeFileSync(file, JSON.stringify(options));
  const generator = spawn(process.execPath, [join(HERE, 'load.js'), file], { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  generator.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
  });
  const [code] = (await once(generator, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`the load generator exited with ${code} on 127.0.0.1:${options.port}${options.path}`);
  const result = JSON.parse(output) as LoadResult;
  // A target that answered nothing (crashed, stalled) must not turn into a ratio of Infinity or 0.
  if (result.total === 0) throw new Error(`no request to 127.0.0.1:${options.port}${options.path} completed in ${options.seconds} s (${result.errors} errors)`);
  return result;
}

export interface Started {
  readonly child: ChildProcess;
  readonly port: number;
}

export /** Starts a child process and waits for the first stdout line matching `pick`, which yields the port. */
function startProcess(args: readonly string[], pick: (line: string) => number | undefined): Promise<Started> {
  return new Promise((resolvePort, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error(`timed out starting ${args.join(' ')}`)), 20_000);
    let found = false;
    lines.on('line', (line) => {
      if (found) return;
      const port = pick(line);
      if (port !== undefined) {
        found = true;
        clearTimeout(timer);
        // From here on the child's output is drained unread: parsing its log lines would load the benchmark's own CPU.
        lines.close();
        child.stdout!.resume();
        resolvePort({ child, port });
      }
    });
    child.once('exit', (code) => {
      if (!found) reject(new Error(`${args.join(' ')} exited with ${code}`));
    });
  });
}

/** The port of a `{"port": N}` line, or of the gateway's listening line. */
export const portLine = (line: string): number | undefined => {
  try {
    const parsed = JSON.parse(line) as { port?: unknown; msg?: unknown };
    return typeof parsed.port === 'number' && (parsed.msg === undefined || parsed.msg === 'gatehouse listening') ? parsed.port : undefined;
  } catch {
    return undefined;
  }
};

export /** SIGTERM, then the wait for each exit (a gateway drains and closes its audit log first); SIGKILL past 10 s. */
async function stopAll(children: readonly ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }),
  );
}

export /** The bench's scratch directory goes; a leftover (a file still being written somewhere) is reported, never a crash. */
function removeWork(work: string): void {
  try {
    rmSync(work, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  } catch (error) {
    process.stderr.write(`bench: could not remove ${work}: ${error instanceof Error ? error.message : String(error)}\n`);
  }
}
