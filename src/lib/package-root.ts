// Where the installed package is: the nearest directory above this module that holds Gatehouse's package.json, whether the
// module runs built (dist/src/lib) or from source (src/lib, under the test runner).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name === 'gatehouse') return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('the gatehouse package.json was not found above its modules');
    dir = parent;
  }
}

/** The `gatehouse` command's main module (built), for running one of its commands in a process of its own. */
export function cliModule(): string {
  return join(packageRoot(), 'dist', 'src', 'cli', 'main.js');
}
