// Directory creation without `mkdir -p`'s failure modes: each missing level is made once, and any error names the path.
// Node's recursive mkdir retries a parent that reports ENOENT after being "created" (e.g. under /proc) forever at full
// CPU; here every level is attempted exactly once, so a path that cannot exist fails at once with a clear message.
import { mkdirSync, statSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';

export class DirectoryError extends Error {
  /** The directory that was asked for. */
  readonly path: string;
  /** The errno code of the failed step (ENOENT, EACCES, ENOTDIR, EROFS, …). */
  readonly code: string;
  constructor(path: string, code: string, detail: string) {
    super(`cannot create directory ${path}: ${detail}`);
    this.name = 'DirectoryError';
    this.path = path;
    this.code = code;
  }
}

function errnoOf(error: unknown): { code: string; text: string } {
  const code = error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : 'EIO';
  // Node's message is "ENOENT: no such file or directory, mkdir '/x'": keep the human part, the path is named by us.
  const text = error instanceof Error ? (error.message.split(',')[0] ?? code) : code;
  return { code, text };
}

function statOrUndefined(path: string, target: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (error) {
    const { code, text } = errnoOf(error);
    // ENOTDIR: some ancestor is a file; walking further up finds it and reports it by name.
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new DirectoryError(target, code, `${text} (stat ${path})`);
  }
}

/**
 * Creates `dir` and any missing parents, each with `mode` (less the umask); an existing directory is left as it is,
 * permissions included. Synchronous, so start-up code and stores can call it before opening files. Throws DirectoryError.
 */
export function makeDirectory(dir: string, mode: number): void {
  const target = resolve(dir);
  const missing: string[] = [];
  let current = target;
  for (;;) {
    const stats = statOrUndefined(current, target);
    if (stats !== undefined) {
      if (!stats.isDirectory()) throw new DirectoryError(target, 'ENOTDIR', `${current} exists and is not a directory`);
      break;
    }
    const parent = dirname(current);
    // Only reachable if even the root is missing (a broken mount namespace): nothing to create it in.
    if (parent === current) throw new DirectoryError(target, 'ENOENT', `no existing ancestor directory`);
    missing.push(current);
    current = parent;
  }
  for (const level of missing.reverse()) {
    try {
      mkdirSync(level, { mode });
    } catch (error) {
      const { code, text } = errnoOf(error);
      // Another process may have made the same level in the meantime; that is what we wanted.
      if (code === 'EEXIST' && statOrUndefined(level, target)?.isDirectory() === true) continue;
      throw new DirectoryError(target, code, `${text} (mkdir ${level})`);
    }
  }
}
