// What the admin and audit commands share for reading their configuration and printing: one way to load the config
// (exit 78 on a bad file) and one table printer that neutralises characters able to drive a terminal.
import { ConfigError, loadConfigFile } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { UNPRINTABLE } from '../issuer/client-rules.js';

// Control, format (bidi overrides, zero-width), surrogate, private-use and line/paragraph separator characters: a name is
// printed in tables and logs, so nothing in it may move the cursor or reorder what a reader sees.
const UNPRINTABLES = new RegExp(UNPRINTABLE.source, 'gu');

export interface ConfigOptions {
  readonly config: string;
  readonly data?: string;
}

/** The configuration of `-c`/`-d`; an invalid one ends the command with `configExit` and the problems it has. */
export function loadCommandConfig(options: ConfigOptions, fail: (message: string, code: number) => never, configExit: number, databaseUrl?: string): Config {
  try {
    return loadConfigFile(options.config, {
      ...(options.data !== undefined ? { dataDir: options.data } : {}),
      ...(databaseUrl !== undefined ? { databaseUrl } : {}),
    });
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message, configExit);
    throw error;
  }
}

export function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

export function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

/** For human output: text written by others (a stored name, a logged path) still cannot drive the terminal. */
export function printable(text: string): string {
  return text.replace(UNPRINTABLES, '\uFFFD');
}

/** Aligned columns, two spaces apart; without `withHeader` (a followed stream), the rows alone. */
export function table(header: readonly string[], rawRows: readonly (readonly string[])[], withHeader = true): string {
  const rows = rawRows.map((row) => row.map(printable));
  const all = withHeader ? [header, ...rows] : rows;
  const widths = header.map((_, i) => Math.max(...all.map((row) => (row[i] ?? '').length)));
  return all
    .map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
