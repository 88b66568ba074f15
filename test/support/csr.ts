// Certificate requests made as a client would make them: `openssl req`, with a fresh key, in a test's own directory.
// Asynchronous, so a test whose gateway runs in the same process is not blocked while openssl works.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** `-newkey` arguments of a P-256 key (the default). */
export const EC_P256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];

export interface MadeCsr {
  readonly csrPem: string;
  readonly keyPem: string;
  readonly csrFile: string;
  readonly keyFile: string;
}

/**
 * A CSR for a new key, written to `<dir>/<name>.csr` and `<dir>/<name>-key.pem`: subject `subject` (default CN=client),
 * each of `extensions` added with -addext (e.g. `subjectAltName=URI:…`), the key made with `newkey` (default P-256).
 */
export async function opensslCsr(
  dir: string,
  name: string,
  opts: { readonly newkey?: readonly string[]; readonly subject?: string; readonly extensions?: readonly string[] } = {},
): Promise<MadeCsr> {
  const keyFile = join(dir, `${name}-key.pem`);
  const csrFile = join(dir, `${name}.csr`);
  const extensions = (opts.extensions ?? []).flatMap((extension) => ['-addext', extension]);
  await run(
    'openssl',
    ['req', '-new', ...(opts.newkey ?? EC_P256), '-nodes', '-keyout', keyFile, '-out', csrFile, '-subj', opts.subject ?? '/CN=client', ...extensions],
    {
      timeout: 20_000,
    },
  );
  return { csrPem: readFileSync(csrFile, 'utf8'), keyPem: readFileSync(keyFile, 'utf8'), csrFile, keyFile };
}
