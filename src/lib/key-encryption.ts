// The key-encryption key (KEK): loads or creates the 256-bit master key and seals signing-key private keys with AES-256-GCM.
// Key bytes never appear in errors, logs or inspect output: errors name the variable or file, never its contents.
import { createCipheriv, createDecipheriv, createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { closeSync, constants as fsConstants, fstatSync, fsyncSync, linkSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { makeDirectory } from './make-directory.js';
import path from 'node:path';
import { inspect } from 'node:util';

/** The environment variable the CLI reads the master key from (named in errors, its value never is). */
export const MASTER_KEY_ENV = 'GATEHOUSE_MASTER_KEY';

const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
// 32 bytes are exactly 43 unpadded base64url characters; the last one carries 4 bits, hence its restricted alphabet.
const KEY_TEXT = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;
const BASE64URL = /^[A-Za-z0-9_-]*$/;
// The key file holds 43 characters and perhaps a newline: anything much larger is not a key file, so it is not read whole.
const MAX_KEY_FILE_BYTES = 256;

export type MasterKeyErrorCode = 'invalid_master_key' | 'invalid_key_file' | 'insecure_key_file' | 'key_file_unavailable' | 'missing_master_key';

/** The master key could not be loaded or created. The message says what to fix and never contains key material. */
export class MasterKeyError extends Error {
  constructor(
    readonly code: MasterKeyErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'MasterKeyError';
  }
}

/** A ciphertext did not authenticate: wrong key-encryption key, wrong AAD (moved to another row), altered or malformed. */
export class KeyDecryptionError extends Error {
  constructor(message = 'The ciphertext does not authenticate under this key-encryption key and AAD.') {
    super(message);
    this.name = 'KeyDecryptionError';
  }
}

export interface KeyEncryptionKey {
  /** Where the key came from: the environment, an existing file, or a file created by this call. */
  readonly source: 'env' | 'file' | 'created';
  /** AES-256-GCM with a fresh random 96-bit IV; returns base64url(iv ‖ tag ‖ ciphertext). `aad` binds the ciphertext to its context (the kid). */
  encrypt(plaintext: Buffer, aad: string): string;
  /** Throws KeyDecryptionError unless `ciphertext` was produced by this key with the same `aad`. */
  decrypt(ciphertext: string, aad: string): Buffer;
  /** A 256-bit key for one purpose (HKDF-SHA256, info `gatehouse:<purpose>`): the same on every instance sharing this key. */
  deriveKey(purpose: string): KeyObject;
}

class AesGcmKeyEncryptionKey implements KeyEncryptionKey {
  // A KeyObject keeps the bytes in native memory, out of reach of JSON.stringify, inspect and heap walks over plain objects.
  readonly #key: KeyObject;

  constructor(
    keyBytes: Buffer,
    readonly source: 'env' | 'file' | 'created',
  ) {
    this.#key = createSecretKey(keyBytes);
    keyBytes.fill(0);
  }

  deriveKey(purpose: string): KeyObject {
    return createSecretKey(Buffer.from(hkdfSync('sha256', this.#key, Buffer.alloc(0), `gatehouse:${purpose}`, 32)));
  }

  encrypt(plaintext: Buffer, aad: string): string {
    // A random 96-bit IV per message: with at most a few thousand keys ever sealed, the GCM collision bound is far away.
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(Buffer.from(aad, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
  }

  decrypt(ciphertext: string, aad: string): Buffer {
    // Strict, canonical base64url only: Buffer.from() silently skips characters it does not know.
    if (typeof ciphertext !== 'string' || !BASE64URL.test(ciphertext)) throw new KeyDecryptionError();
    const raw = Buffer.from(ciphertext, 'base64url');
    if (raw.length < IV_BYTES + TAG_BYTES || raw.toString('base64url') !== ciphertext) throw new KeyDecryptionError();
    const decipher = createDecipheriv('aes-256-gcm', this.#key, raw.subarray(0, IV_BYTES), { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    const head = decipher.update(raw.subarray(IV_BYTES + TAG_BYTES));
    try {
      return Buffer.concat([head, decipher.final()]);
    } catch {
      // Unauthenticated plaintext must not escape, even partially.
      head.fill(0);
      throw new KeyDecryptionError();
    } finally {
      raw.fill(0);
    }
  }

  toJSON(): string {
    return '[KeyEncryptionKey]';
  }

  [inspect.custom](): string {
    return `KeyEncryptionKey { source: '${this.source}' }`;
  }
}

export interface LoadKeyEncryptionKeyOptions {
  /** The value of GATEHOUSE_MASTER_KEY (base64url of 32 random bytes), as passed in by the CLI; when set, `file` is not touched. */
  readonly masterKey?: string | undefined;
  /** The key file, e.g. data/master.key: read when present (mode 0600 or stricter), created once otherwise. */
  readonly file: string;
}

/** Loads the key-encryption key from `masterKey`, else from `file`, creating the file (mode 0600, parent 0700) on first use. */
export function loadKeyEncryptionKey(opts: LoadKeyEncryptionKeyOptions): KeyEncryptionKey {
  if (opts.masterKey !== undefined) {
    return new AesGcmKeyEncryptionKey(parseMasterKeyText(opts.masterKey, `${MASTER_KEY_ENV}`, 'invalid_master_key'), 'env');
  }
  const existing = readKeyFile(opts.file);
  if (existing !== undefined) return new AesGcmKeyEncryptionKey(existing, 'file');
  const created = createKeyFile(opts.file);
  // Another process won the race to create the file: use its key, or the keys each of us encrypts would be unreadable to the other.
  if (created === undefined) {
    const winner = readKeyFile(opts.file);
    if (winner === undefined) throw new MasterKeyError('key_file_unavailable', `The key file ${opts.file} disappeared while it was being created.`);
    return new AesGcmKeyEncryptionKey(winner, 'file');
  }
  return new AesGcmKeyEncryptionKey(created, 'created');
}

/** Generates the text of a new master key (base64url of 32 CSPRNG bytes), e.g. for an operator to put in GATEHOUSE_MASTER_KEY. */
export function generateMasterKeyText(): string {
  return randomBytes(KEY_BYTES).toString('base64url');
}

function parseMasterKeyText(text: string, origin: string, code: MasterKeyErrorCode): Buffer {
  // Surrounding whitespace is a copy/paste or env-file artefact (a trailing newline or CR), never part of the key.
  const trimmed = text.trim();
  if (trimmed === '') throw new MasterKeyError(code, `${origin} is empty; it must hold the base64url encoding of 32 random bytes (43 characters).`);
  if (!BASE64URL.test(trimmed)) {
    throw new MasterKeyError(code, `${origin} is not base64url (A-Z a-z 0-9 - _, no padding); it must hold the base64url encoding of 32 random bytes.`);
  }
  const bytes = Buffer.from(trimmed, 'base64url');
  if (bytes.length !== KEY_BYTES) {
    const length = bytes.length;
    bytes.fill(0);
    throw new MasterKeyError(code, `${origin} must decode to exactly ${KEY_BYTES} bytes (43 base64url characters); it decodes to ${length} bytes.`);
  }
  if (!KEY_TEXT.test(trimmed)) {
    // Non-zero padding bits: the text was not produced by a base64url encoder, so it is probably not the intended key.
    bytes.fill(0);
    throw new MasterKeyError(code, `${origin} is not canonical base64url (its last character has stray bits).`);
  }
  return bytes;
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' && codes.includes(err.code);
}

/** Reads and checks the key file; undefined when it does not exist. */
function readKeyFile(file: string): Buffer | undefined {
  let fd: number;
  try {
    // O_NOFOLLOW: a symlink planted in place of the key file could point anywhere (and its own mode says nothing).
    fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (err: unknown) {
    if (isErrno(err, 'ENOENT')) return undefined;
    if (isErrno(err, 'ELOOP'))
      throw new MasterKeyError(
        'insecure_key_file',
        `The key file ${file} is a symbolic link; refusing to follow it. Replace it with the file itself (mode 0600).`,
      );
    throw new MasterKeyError('key_file_unavailable', `The key file ${file} cannot be opened (${errnoCode(err)}).`);
  }
  try {
    // fstat on the opened descriptor, so the checked file is the one read (no check-then-open race).
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new MasterKeyError('invalid_key_file', `The key file ${file} is not a regular file.`);
    if ((stat.mode & 0o077) !== 0) {
      const mode = (stat.mode & 0o777).toString(8).padStart(4, '0');
      throw new MasterKeyError(
        'insecure_key_file',
        `The key file ${file} is accessible to group or others (mode ${mode}); it must be 0600 or stricter. Run \`chmod 600 ${file}\` (and consider the key exposed if others could read it).`,
      );
    }
    const buf = Buffer.alloc(MAX_KEY_FILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const n = readSync(fd, buf, length, buf.length - length, null);
      if (n === 0) break;
      length += n;
      if (length > MAX_KEY_FILE_BYTES) break;
    }
    const text = buf.toString('utf8', 0, length);
    buf.fill(0);
    if (length > MAX_KEY_FILE_BYTES) throw new MasterKeyError('invalid_key_file', `The key file ${file} is too large to be a master key file.`);
    return parseMasterKeyText(text, `The key file ${file}`, 'invalid_key_file');
  } finally {
    closeSync(fd);
  }
}

/**
 * Creates the key file atomically: write a private temp file, fsync, then hard-link it into place. link() fails if the
 * name exists, so two processes starting at once cannot overwrite each other's key (rename would). Returns undefined
 * when another process created the file first.
 */
function createKeyFile(file: string): Buffer | undefined {
  const dir = path.dirname(file);
  try {
    // Only directories created here get 0700; an existing (possibly shared) parent is left as the operator set it.
    makeDirectory(dir, 0o700);
  } catch (err: unknown) {
    throw new MasterKeyError('key_file_unavailable', `Cannot create the directory ${dir} for the key file (${errnoCode(err)}).`);
  }
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(8).toString('hex')}.tmp`);
  const key = randomBytes(KEY_BYTES);
  let fd: number | undefined;
  try {
    // Mode 0600 at creation, so the key is never readable by others, not even between open and chmod.
    fd = openSync(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
    writeSync(fd, `${key.toString('base64url')}\n`);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    try {
      linkSync(tmp, file);
    } catch (err: unknown) {
      if (isErrno(err, 'EEXIST')) {
        key.fill(0);
        return undefined;
      }
      throw err;
    }
    fsyncDirectory(dir);
    return key;
  } catch (err: unknown) {
    key.fill(0);
    if (err instanceof MasterKeyError) throw err;
    throw new MasterKeyError('key_file_unavailable', `Cannot create the key file ${file} (${errnoCode(err)}).`);
  } finally {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // Already gone or never created: nothing to clean up.
    }
  }
}

function fsyncDirectory(dir: string): void {
  // Makes the new directory entry durable: otherwise a power loss could lose the key file after keys were sealed with it.
  const fd = openSync(dir, fsConstants.O_RDONLY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function errnoCode(err: unknown): string {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : 'unknown error';
}
