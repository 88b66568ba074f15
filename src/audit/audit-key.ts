// The audit key: a dedicated Ed25519 key that signs the audit chain's checkpoints — never a token signing key. Kept in
// data_dir/audit-key.json (0600), outside the audit directory, its private half sealed under the master key like the
// signing keys; its public half is exported with `gatehouse audit key` to whoever verifies the log.
import { createPrivateKey, createPublicKey, generateKeyPairSync, hash, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { KeyEncryptionKey } from '../lib/key-encryption.js';
import { makeDirectory } from '../lib/make-directory.js';

/** data_dir/audit-key.json: beside the master key and the store, outside the audit directory. */
export function auditKeyFile(config: { readonly data_dir: string }): string {
  return join(config.data_dir, 'audit-key.json');
}

/** The text a checkpoint signs: what it commits to, one field per line, under a label no other signature uses. */
export function checkpointPayload(fields: { instance: string; coversSeq: number; head: string; ts: string; bootId: string }): Buffer {
  return Buffer.from(`gatehouse-audit-checkpoint/1\n${fields.instance}\n${fields.coversSeq}\n${fields.head}\n${fields.ts}\n${fields.bootId}`, 'utf8');
}

/**
 * The text a prune record signs: which segments retention removed and the record they ended with (the first retained
 * record links to it), under its own label, so a signature can never be replayed as a checkpoint's or the other way.
 */
export function prunePayload(fields: { instance: string; throughSeq: number; throughHash: string; segments: string; ts: string; bootId: string }): Buffer {
  return Buffer.from(
    `gatehouse-audit-prune/1\n${fields.instance}\n${fields.throughSeq}\n${fields.throughHash}\n${fields.segments}\n${fields.ts}\n${fields.bootId}`,
    'utf8',
  );
}

export interface CheckpointSigner {
  /** base64url SHA-256 of the public key's SPKI bytes: names the key in each checkpoint. */
  readonly keyId: string;
  sign(payload: Buffer): string;
}

export class AuditKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuditKeyError';
  }
}

interface AuditKeyFile {
  readonly version: 1;
  readonly key_id: string;
  readonly public_key: string;
  readonly private_key_sealed: string;
}

export function keyIdOf(publicKey: KeyObject): string {
  return hash('sha256', publicKey.export({ type: 'spki', format: 'der' }), 'base64url');
}

/** The audit key of `file`, created (0600, exclusively) when there is none; its private half opens only under `kek`. */
export function loadOrCreateAuditKey(file: string, kek: KeyEncryptionKey): CheckpointSigner {
  let text: string | undefined;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if (!(error instanceof Error && 'code' in error && error.code === 'ENOENT'))
      throw new AuditKeyError(`cannot read the audit key ${file}: ${(error as Error).message}`);
  }
  if (text === undefined) {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    const keyId = keyIdOf(publicKey);
    const stored: AuditKeyFile = {
      version: 1,
      key_id: keyId,
      public_key: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      private_key_sealed: kek.encrypt(privateKey.export({ type: 'pkcs8', format: 'der' }), `gatehouse-audit-key:${keyId}`),
    };
    try {
      // The data directory may not exist yet: with a PostgreSQL store nothing else has made it when an admin command runs.
      makeDirectory(dirname(file), 0o700);
      writeFileSync(file, `${JSON.stringify(stored, null, 2)}\n`, { flag: 'wx', mode: 0o600 });
      return signerOf(keyId, privateKey);
    } catch (error) {
      // Another process created it first: use that one, so both sign with the key verifiers were given.
      if (!(error instanceof Error && 'code' in error && error.code === 'EEXIST'))
        throw new AuditKeyError(`cannot create the audit key ${file}: ${(error as Error).message}`);
      text = readFileSync(file, 'utf8');
    }
  }
  const stored = parseKeyFile(text, file);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: kek.decrypt(stored.private_key_sealed, `gatehouse-audit-key:${stored.key_id}`), format: 'der', type: 'pkcs8' });
  } catch {
    throw new AuditKeyError(`the audit key ${file} does not open with this master key (it was sealed with another one)`);
  }
  if (keyIdOf(createPublicKey(privateKey)) !== stored.key_id)
    throw new AuditKeyError(`the audit key ${file} is inconsistent: its key id does not match its key`);
  return signerOf(stored.key_id, privateKey);
}

function signerOf(keyId: string, privateKey: KeyObject): CheckpointSigner {
  return { keyId, sign: (payload) => sign(null, payload, privateKey).toString('base64url') };
}

/** The public key stored in an audit key file (what `gatehouse audit key` prints). */
export function readAuditPublicKey(file: string): { readonly keyId: string; readonly pem: string } {
  const stored = parseKeyFile(readFileSync(file, 'utf8'), file);
  return { keyId: stored.key_id, pem: stored.public_key };
}

function parseKeyFile(text: string, file: string): AuditKeyFile {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new AuditKeyError(`the audit key ${file} is not valid JSON`);
  }
  const r = parsed as Partial<Record<keyof AuditKeyFile, unknown>>;
  if (
    typeof parsed !== 'object' ||
    parsed === null ||
    r.version !== 1 ||
    typeof r.key_id !== 'string' ||
    typeof r.public_key !== 'string' ||
    typeof r.private_key_sealed !== 'string'
  ) {
    throw new AuditKeyError(`the audit key ${file} is not an audit key file`);
  }
  return parsed as AuditKeyFile;
}

/** A verifier of checkpoint signatures from a PEM public key (`gatehouse audit key` output). */
export function checkpointVerifier(pem: string): { readonly keyId: string; verify(payload: Buffer, signature: string): boolean } {
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(pem);
  } catch {
    throw new AuditKeyError('not a PEM public key');
  }
  if (publicKey.asymmetricKeyType !== 'ed25519') throw new AuditKeyError('the audit key is an Ed25519 public key; this is another kind of key');
  return { keyId: keyIdOf(publicKey), verify: (payload, signature) => verify(null, payload, publicKey, Buffer.from(signature, 'base64url')) };
}
