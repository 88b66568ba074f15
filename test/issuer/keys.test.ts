// Tests for the key-encryption key, signing-key generation, the KeyRing and publish-first rotation (JWT-03/04/08, REL-07).
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { execFile } from 'node:child_process';
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { inspect, promisify } from 'node:util';
import { SignJWT, calculateJwkThumbprint, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWK } from 'jose';
import type { SigningKey, SigningKeyChange, SigningKeyStore } from '../../src/store/contract.js';
import { SqliteCredentialStore } from '../../src/store/sqlite.js';
import { KeyDecryptionError, loadKeyEncryptionKey, MasterKeyError, type KeyEncryptionKey } from '../../src/lib/key-encryption.js';
import { KeyRing } from '../../src/issuer/key-ring.js';
import { CLOCK_SKEW_ALLOWANCE_MS, RETIREMENT_GRACE_MS, signingKeyStates } from '../../src/issuer/key-schedule.js';
import { SigningKeyError, generateSigningKey, type SigningAlgorithm } from '../../src/issuer/signing-key.js';
import { ensureSigningKey, revokeSigningKey, rotateSigningKey } from '../../src/issuer/key-rotation.js';

const execFileAsync = promisify(execFile);
const ISSUER = 'https://gatehouse.test';
const AUDIENCE = 'https://api.test';
const T0 = 1_750_000_000_000;
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

let dir: string;
beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'gatehouse-keys-'));
});
afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

function envKek(): KeyEncryptionKey {
  return loadKeyEncryptionKey({ masterKey: randomBytes(32).toString('base64url'), file: path.join(dir, 'unused.key') });
}

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (err: unknown) {
    if (err instanceof Error) return err;
    throw new Error('threw a non-Error');
  }
  throw new Error('did not throw');
}

function flip(ciphertext: string, index: number): string {
  const raw = Buffer.from(ciphertext, 'base64url');
  raw[index] = (raw[index] ?? 0) ^ 0x01;
  return raw.toString('base64url');
}

/** An in-memory SigningKeyStore that counts reads, for the unit tests. */
class MemoryKeyStore implements SigningKeyStore {
  keys = new Map<string, SigningKey>();
  reads = 0;
  async addSigningKey(key: SigningKey): Promise<void> {
    this.keys.set(key.kid, key);
  }
  async listSigningKeys(): Promise<readonly SigningKey[]> {
    this.reads += 1;
    return [...this.keys.values()];
  }
  async rotateSigningKey(
    next: SigningKey,
    retire: { readonly kid: string; readonly retiredAt: number; readonly expiresAt: number } | undefined,
  ): Promise<void> {
    if (retire !== undefined) {
      const old = this.keys.get(retire.kid);
      if (old === undefined) throw new Error('unknown kid');
      this.keys.set(retire.kid, { ...old, retiredAt: retire.retiredAt, expiresAt: retire.expiresAt });
    }
    this.keys.set(next.kid, next);
  }
  async changeSigningKeys(change: (current: readonly SigningKey[]) => SigningKeyChange): Promise<SigningKeyChange> {
    const decided = change([...this.keys.values()]);
    for (const key of decided.update) {
      if (!this.keys.has(key.kid)) throw new Error('unknown kid');
      this.keys.set(key.kid, key);
    }
    for (const key of decided.insert) this.keys.set(key.kid, key);
    return decided;
  }
  async purgeExpiredSigningKeys(now: number): Promise<number> {
    let n = 0;
    for (const [kid, key] of this.keys) {
      if (key.expiresAt !== null && key.expiresAt <= now) {
        this.keys.delete(kid);
        n += 1;
      }
    }
    return n;
  }
}

/** Counts decryptions, to show private keys are decrypted once and not per refresh. */
function countingKek(inner: KeyEncryptionKey): KeyEncryptionKey & { decrypts: number } {
  const wrapper = {
    source: inner.source,
    decrypts: 0,
    encrypt: (plaintext: Buffer, aad: string) => inner.encrypt(plaintext, aad),
    deriveKey: (purpose: string) => inner.deriveKey(purpose),
    decrypt: (ciphertext: string, aad: string) => {
      wrapper.decrypts += 1;
      return inner.decrypt(ciphertext, aad);
    },
  };
  return wrapper;
}

async function issue(ring: KeyRing, nowMs: number): Promise<string> {
  const key = ring.signingKey();
  const iat = Math.floor(nowMs / 1000);
  return new SignJWT({ client_id: 'client-1', scope: 'echo:read' })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' })
    .setIssuer(ISSUER)
    .setSubject('client-1')
    .setAudience(AUDIENCE)
    .setIssuedAt(iat)
    .setExpirationTime(iat + 600)
    .setJti(randomBytes(16).toString('base64url'))
    .sign(key.privateKey);
}

/** Verifies the way the bearer authenticator does: kid → ring lookup, algorithm pinned to the key's own alg. */
async function verify(ring: KeyRing, token: string, nowMs: number): Promise<string> {
  const { kid } = decodeProtectedHeader(token);
  if (typeof kid !== 'string') throw new Error('no kid');
  const vk = ring.verificationKey(kid);
  if (vk === undefined) throw new Error('unknown kid');
  const { payload } = await jwtVerify(token, vk.key, {
    algorithms: [vk.alg],
    issuer: ISSUER,
    audience: AUDIENCE,
    typ: 'at+jwt',
    currentDate: new Date(nowMs),
  });
  return String(payload.sub);
}

function publishedKids(ring: KeyRing): string[] {
  return ring.publishedJwks().keys.map((k) => String(k.kid));
}

describe('key-encryption key: GATEHOUSE_MASTER_KEY', () => {
  it('accepts the base64url of 32 bytes (surrounding whitespace ignored) and never touches the key file', () => {
    const text = randomBytes(32).toString('base64url');
    const file = path.join(dir, 'data', 'master.key');
    const a = loadKeyEncryptionKey({ masterKey: text, file });
    const b = loadKeyEncryptionKey({ masterKey: `${text}\r\n`, file });
    expect(a.source).toBe('env');
    expect(b.decrypt(a.encrypt(Buffer.from('hello'), 'kid-1'), 'kid-1').toString()).toBe('hello');
    return expect(fsp.stat(path.dirname(file))).rejects.toThrow(/ENOENT/);
  });

  it('rejects a wrong length with an error naming the variable but not its value', () => {
    for (const bytes of [16, 31, 33, 64]) {
      const value = randomBytes(bytes).toString('base64url');
      const err = errorOf(() => loadKeyEncryptionKey({ masterKey: value, file: path.join(dir, 'm.key') }));
      expect(err).toBeInstanceOf(MasterKeyError);
      expect((err as MasterKeyError).code).toBe('invalid_master_key');
      expect(err.message).toContain('GATEHOUSE_MASTER_KEY');
      expect(err.message).toContain('32 bytes');
      expect(err.message).not.toContain(value);
      expect(inspect(err)).not.toContain(value);
    }
  });

  it('rejects text that is not base64url (standard base64, padding, other characters, empty), without echoing it', () => {
    const body = randomBytes(31).toString('base64url');
    const values = [
      `${randomBytes(32).toString('base64')}=`,
      `${body.slice(0, 40)}+/A`,
      `${body.slice(0, 42)}=`,
      `${body.slice(0, 20)} ${body.slice(20, 42)}`,
      `${body.slice(0, 42)}é`,
      '',
      '   ',
    ];
    for (const value of values) {
      const err = errorOf(() => loadKeyEncryptionKey({ masterKey: value, file: path.join(dir, 'm.key') }));
      expect(err).toBeInstanceOf(MasterKeyError);
      expect(err.message).toContain('GATEHOUSE_MASTER_KEY');
      if (value.trim() !== '') expect(err.message).not.toContain(value.trim());
    }
  });

  it('rejects 43 characters whose last one carries stray bits (not what an encoder produces)', () => {
    const canonical = randomBytes(32).toString('base64url');
    const stray = `${canonical.slice(0, 42)}B`;
    const err = errorOf(() => loadKeyEncryptionKey({ masterKey: stray, file: path.join(dir, 'm.key') }));
    expect(err.message).toMatch(/GATEHOUSE_MASTER_KEY is not canonical/);
    expect(err.message).not.toContain(stray);
  });

  it('does not reveal key bytes through inspect or JSON', () => {
    const text = randomBytes(32).toString('base64url');
    const kek = loadKeyEncryptionKey({ masterKey: text, file: path.join(dir, 'm.key') });
    expect(inspect(kek, { showHidden: true, depth: 10 })).not.toContain(text);
    expect(JSON.stringify({ kek })).not.toContain(text);
    expect(JSON.stringify({ kek })).not.toContain(Buffer.from(text, 'base64url').toString('hex'));
  });
});

describe('key-encryption key: key file', () => {
  it('creates the file once with mode 0600 (parent 0700), atomically, and reuses it', async () => {
    const file = path.join(dir, 'data', 'master.key');
    const created = loadKeyEncryptionKey({ file });
    expect(created.source).toBe('created');
    expect((await fsp.stat(file)).mode & 0o777).toBe(0o600);
    expect((await fsp.stat(path.dirname(file))).mode & 0o777).toBe(0o700);
    const text = await fsp.readFile(file, 'utf8');
    expect(text).toMatch(/^[A-Za-z0-9_-]{43}\n$/);
    // No temp file is left behind.
    expect(await fsp.readdir(path.dirname(file))).toEqual(['master.key']);

    const sealed = created.encrypt(Buffer.from('private key'), 'kid-a');
    const reused = loadKeyEncryptionKey({ file });
    expect(reused.source).toBe('file');
    expect(await fsp.readFile(file, 'utf8')).toBe(text);
    expect(reused.decrypt(sealed, 'kid-a').toString()).toBe('private key');
  });

  it('gives processes racing to create the missing file one shared key (link(2) never overwrites)', async () => {
    const file = path.join(dir, 'race', 'master.key');
    // The built copy (global setup compiles dist/) lets plain node children load the module at the same moment.
    const moduleUrl = pathToFileURL(path.join(import.meta.dirname, '..', '..', 'dist', 'src', 'lib', 'key-encryption.js')).href;
    const script = `const m = await import(${JSON.stringify(moduleUrl)}); const k = m.loadKeyEncryptionKey({ file: process.argv[1] }); process.stdout.write(k.source + ' ' + k.encrypt(Buffer.from('shared'), 'race'));`;
    const results = await Promise.all(
      Array.from({ length: 6 }, async () => {
        const { stdout } = await execFileAsync(process.execPath, ['--input-type=module', '-e', script, file]);
        return stdout.split(' ');
      }),
    );
    const reader = loadKeyEncryptionKey({ file });
    expect(results.filter(([source]) => source === 'created').length).toBe(1);
    for (const [, sealed] of results) expect(reader.decrypt(sealed ?? '', 'race').toString()).toBe('shared');
    expect(await fsp.readdir(path.dirname(file))).toEqual(['master.key']);
  });

  it('accepts 0400, refuses a group/other-accessible file (0644, 0640, 0604) without echoing its contents', async () => {
    const file = path.join(dir, 'master.key');
    loadKeyEncryptionKey({ file });
    const text = (await fsp.readFile(file, 'utf8')).trim();
    await fsp.chmod(file, 0o400);
    expect(loadKeyEncryptionKey({ file }).source).toBe('file');
    for (const mode of [0o644, 0o640, 0o604, 0o660]) {
      await fsp.chmod(file, mode);
      const err = errorOf(() => loadKeyEncryptionKey({ file }));
      expect(err).toBeInstanceOf(MasterKeyError);
      expect((err as MasterKeyError).code).toBe('insecure_key_file');
      expect(err.message).toContain(file);
      expect(err.message).toContain(`0${mode.toString(8)}`);
      expect(err.message).toContain('chmod 600');
      expect(err.message).not.toContain(text);
    }
    // Refusing does not "fix" or replace the file: the operator decides.
    expect((await fsp.readFile(file, 'utf8')).trim()).toBe(text);
  });

  it('refuses a symlinked key file and a file that does not hold a 32-byte key', async () => {
    const real = path.join(dir, 'real.key');
    loadKeyEncryptionKey({ file: real });
    const link = path.join(dir, 'link.key');
    await fsp.symlink(real, link);
    expect(() => loadKeyEncryptionKey({ file: link })).toThrow(/symbolic link/);

    const bad = path.join(dir, 'bad.key');
    const content = randomBytes(16).toString('base64url');
    await fsp.writeFile(bad, content, { mode: 0o600 });
    const err = errorOf(() => loadKeyEncryptionKey({ file: bad }));
    expect((err as MasterKeyError).code).toBe('invalid_key_file');
    expect(err.message).not.toContain(content);

    const huge = path.join(dir, 'huge.key');
    await fsp.writeFile(huge, 'A'.repeat(10_000), { mode: 0o600 });
    expect(() => loadKeyEncryptionKey({ file: huge })).toThrow(/too large/);
  });
});

describe('key-encryption key: AES-256-GCM', () => {
  it('round-trips, with a fresh IV each time and iv ‖ tag ‖ ciphertext layout', () => {
    const kek = envKek();
    const plaintext = randomBytes(48);
    const a = kek.encrypt(plaintext, 'kid-1');
    const b = kek.encrypt(plaintext, 'kid-1');
    expect(a).not.toBe(b);
    expect(a).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(Buffer.from(a, 'base64url').length).toBe(12 + 16 + 48);
    expect(Buffer.from(a, 'base64url').subarray(0, 12).equals(Buffer.from(b, 'base64url').subarray(0, 12))).toBe(false);
    expect(kek.decrypt(a, 'kid-1').equals(plaintext)).toBe(true);
    expect(kek.decrypt(b, 'kid-1').equals(plaintext)).toBe(true);
    expect(kek.decrypt(kek.encrypt(Buffer.alloc(0), 'k'), 'k').length).toBe(0);
  });

  it('refuses tampered IV, tag or ciphertext, truncation, malformed text, a wrong AAD and another KEK', () => {
    const kek = envKek();
    const sealed = kek.encrypt(Buffer.from('secret material'), 'kid-1');
    const length = Buffer.from(sealed, 'base64url').length;
    const bad = [
      flip(sealed, 0),
      flip(sealed, 11),
      flip(sealed, 12),
      flip(sealed, 27),
      flip(sealed, 28),
      flip(sealed, length - 1),
      Buffer.from(sealed, 'base64url')
        .subarray(0, length - 1)
        .toString('base64url'),
      Buffer.from(sealed, 'base64url').subarray(0, 27).toString('base64url'),
      '',
      `${sealed}=`,
      `${sealed.slice(0, 10)}+${sealed.slice(11)}`,
      ` ${sealed}`,
    ];
    for (const ciphertext of bad) expect(() => kek.decrypt(ciphertext, 'kid-1')).toThrow(KeyDecryptionError);
    expect(() => kek.decrypt(sealed, 'kid-2')).toThrow(KeyDecryptionError);
    expect(() => kek.decrypt(sealed, '')).toThrow(KeyDecryptionError);
    expect(() => envKek().decrypt(sealed, 'kid-1')).toThrow(KeyDecryptionError);
    expect(errorOf(() => kek.decrypt(sealed, 'kid-2')).message).not.toContain('secret');
  });
});

describe('signing-key generation', () => {
  for (const alg of ['EdDSA', 'ES256'] as const) {
    it(`${alg}: public JWK with kid/alg/use and nothing private; private key sealed under the KEK with the kid as AAD`, async () => {
      const kek = envKek();
      const key = await generateSigningKey(alg, kek, T0, T0 + 5000);
      expect(key).toMatchObject({ alg, createdAt: T0, activatesAt: T0 + 5000, retiredAt: null, expiresAt: null });
      const jwk = JSON.parse(key.publicJwk) as JWK;
      const expectedMembers = alg === 'EdDSA' ? ['alg', 'crv', 'kid', 'kty', 'use', 'x'] : ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y'];
      expect(Object.keys(jwk).sort()).toEqual(expectedMembers);
      for (const member of PRIVATE_MEMBERS) expect(jwk).not.toHaveProperty(member);
      expect(jwk).toMatchObject({ kid: key.kid, alg, use: 'sig', kty: alg === 'EdDSA' ? 'OKP' : 'EC', crv: alg === 'EdDSA' ? 'Ed25519' : 'P-256' });
      // The kid is the RFC 7638 thumbprint of the public key.
      expect(key.kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(key.kid).toBe(await calculateJwkThumbprint(jwk, 'sha256'));

      const der = kek.decrypt(key.encryptedPrivateKey, key.kid);
      const derived = createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' });
      expect(derived.x).toBe(jwk.x);
      expect(derived.y).toBe(jwk.y);
      expect(() => kek.decrypt(key.encryptedPrivateKey, 'another-kid')).toThrow(KeyDecryptionError);
      // Nothing private is in the row in clear.
      expect(key.encryptedPrivateKey).not.toContain(der.toString('base64url').slice(20, 60));
    });
  }

  it('two keys never share a kid', async () => {
    const kek = envKek();
    const a = await generateSigningKey('EdDSA', kek, T0, T0);
    const b = await generateSigningKey('EdDSA', kek, T0, T0);
    expect(a.kid).not.toBe(b.kid);
  });
});

describe('KeyRing: signing and verification', () => {
  it('an empty store publishes nothing and signingKey() throws a typed error', async () => {
    const ring = await KeyRing.load(new MemoryKeyStore(), envKek(), { now: () => T0 });
    expect(ring.publishedJwks()).toEqual({ keys: [] });
    const err = errorOf(() => ring.signingKey());
    expect(err).toBeInstanceOf(SigningKeyError);
    expect((err as SigningKeyError).code).toBe('no_signing_key');
  });

  for (const alg of ['EdDSA', 'ES256'] as const) {
    it(`${alg}: a token signed with signingKey() verifies with verificationKey(kid) and the pinned alg`, async () => {
      const store = new MemoryKeyStore();
      const kek = envKek();
      const { key, created } = await ensureSigningKey(store, kek, alg, T0);
      expect(created).toBe(true);
      const ring = await KeyRing.load(store, kek, { now: () => T0 });
      const handle = ring.signingKey();
      expect(handle).toMatchObject({ kid: key.kid, alg });
      const token = await issue(ring, T0);
      expect(await verify(ring, token, T0)).toBe('client-1');
      expect(ring.verificationKey(key.kid)?.alg).toBe(alg);
      expect(ring.publishedJwks().keys).toEqual([JSON.parse(key.publicJwk)]);
      // Held private keys are not extractable: nothing can export them again.
      expect('extractable' in handle.privateKey && handle.privateKey.extractable).toBe(false);
    });
  }

  it('alg pinning: an ES256 key refuses an EdDSA-signed token naming its kid, and an HS256 token MACed with its public JWK (JWT-03/04)', async () => {
    const store = new MemoryKeyStore();
    const kek = envKek();
    const es = await generateSigningKey('ES256', kek, T0, T0);
    const ed = await generateSigningKey('EdDSA', kek, T0, T0 - 1);
    await store.addSigningKey(es);
    await store.addSigningKey(ed);
    const ring = await KeyRing.load(store, kek, { now: () => T0 });
    expect(ring.signingKey().kid).toBe(es.kid);

    // Forge: sign with the Ed25519 key but point the kid at the ES256 key.
    const edHandle = await (async () => {
      const only = new MemoryKeyStore();
      await only.addSigningKey(ed);
      return (await KeyRing.load(only, kek, { now: () => T0 })).signingKey();
    })();
    const forged = await new SignJWT({ client_id: 'client-1' })
      .setProtectedHeader({ alg: 'EdDSA', kid: es.kid, typ: 'at+jwt' })
      .setIssuer(ISSUER)
      .setSubject('client-1')
      .setAudience(AUDIENCE)
      .setIssuedAt(Math.floor(T0 / 1000))
      .setExpirationTime(Math.floor(T0 / 1000) + 600)
      .sign(edHandle.privateKey);
    const esKey = ring.verificationKey(es.kid);
    expect(esKey?.alg).toBe('ES256');
    if (esKey === undefined) throw new Error('unreachable');
    await expect(jwtVerify(forged, esKey.key, { algorithms: [esKey.alg], currentDate: new Date(T0) })).rejects.toBeInstanceOf(joseErrors.JOSEAlgNotAllowed);
    // Even without the allowlist the imported key is bound to its algorithm.
    await expect(jwtVerify(forged, esKey.key, { currentDate: new Date(T0) })).rejects.toThrow();
    await expect(verify(ring, forged, T0)).rejects.toThrow();

    // HS256 "key confusion": MAC with the public JWK text as the secret.
    const hs = await new SignJWT({ client_id: 'client-1' })
      .setProtectedHeader({ alg: 'HS256', kid: es.kid, typ: 'at+jwt' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(Math.floor(T0 / 1000) + 600)
      .sign(new TextEncoder().encode(es.publicJwk));
    await expect(verify(ring, hs, T0)).rejects.toBeInstanceOf(joseErrors.JOSEAlgNotAllowed);
  });

  it('verificationKey is a pure in-memory lookup: hostile kids find nothing and never reach the store (JWT-08)', async () => {
    const store = new MemoryKeyStore();
    const kek = envKek();
    await ensureSigningKey(store, kek, 'EdDSA', T0);
    const ring = await KeyRing.load(store, kek, { now: () => T0 });
    const reads = store.reads;
    const hostile: unknown[] = [
      '',
      '../../../../dev/null',
      '/dev/null',
      '|sleep 10',
      "x' UNION SELECT '1';--",
      'x'.repeat(10_240),
      '__proto__',
      'constructor',
      0,
      1,
      null,
      {},
      ['a'],
    ];
    for (const kid of hostile) expect(ring.verificationKey(kid as string)).toBeUndefined();
    expect(store.reads).toBe(reads);
  });

  it('decrypts private keys once: refresh reuses unchanged rows and decrypts only new ones', async () => {
    const store = new MemoryKeyStore();
    const kek = countingKek(envKek());
    await ensureSigningKey(store, kek, 'EdDSA', T0);
    const ring = await KeyRing.load(store, kek, { now: () => T0 });
    expect(kek.decrypts).toBe(1);
    ring.signingKey();
    ring.verificationKey(ring.signingKey().kid);
    ring.publishedJwks();
    await ring.refresh();
    expect(kek.decrypts).toBe(1);
    await rotateSigningKey(store, kek, { alg: 'EdDSA', now: T0, activationDelayS: 60, maxTokenLifetimeS: 600 });
    await ring.refresh();
    expect(kek.decrypts).toBe(2);
  });

  it('publishedJwks returns copies: mutating the response changes nothing', async () => {
    const store = new MemoryKeyStore();
    const kek = envKek();
    const { key } = await ensureSigningKey(store, kek, 'EdDSA', T0);
    const ring = await KeyRing.load(store, kek, { now: () => T0 });
    const first = ring.publishedJwks();
    const jwk = first.keys[0];
    if (jwk === undefined) throw new Error('no key');
    jwk.d = 'injected';
    jwk.kid = 'other';
    first.keys.push({ kty: 'oct', k: 'AAAA' });
    expect(ring.publishedJwks().keys).toEqual([JSON.parse(key.publicJwk)]);
  });
});

describe('KeyRing: integrity of stored rows', () => {
  async function twoKeys(): Promise<{ store: MemoryKeyStore; kek: KeyEncryptionKey; a: SigningKey; b: SigningKey }> {
    const store = new MemoryKeyStore();
    const kek = envKek();
    const a = await generateSigningKey('EdDSA', kek, T0, T0);
    const b = await generateSigningKey('ES256', kek, T0, T0);
    return { store, kek, a, b };
  }

  it('a sealed private key moved to another row does not decrypt (kid is the AAD)', async () => {
    const { store, kek, a, b } = await twoKeys();
    await store.addSigningKey({ ...a, encryptedPrivateKey: b.encryptedPrivateKey });
    await expect(KeyRing.load(store, kek)).rejects.toMatchObject({ name: 'SigningKeyError', code: 'undecryptable_key' });
  });

  it('a wrong key-encryption key fails with a clear error naming the kid and the master key sources', async () => {
    const { store, a } = await twoKeys();
    await store.addSigningKey(a);
    const err = await KeyRing.load(store, envKek()).then(
      () => new Error('loaded'),
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(SigningKeyError);
    expect(err.message).toContain(a.kid);
    expect(err.message).toContain('GATEHOUSE_MASTER_KEY');
  });

  it('refuses a public JWK with private members, a swapped public key, mismatched alg/kid/use and extra members', async () => {
    const { kek, a, b } = await twoKeys();
    const jwkA = JSON.parse(a.publicJwk) as Record<string, unknown>;
    const jwkB = JSON.parse(b.publicJwk) as Record<string, unknown>;
    const other = await generateSigningKey('EdDSA', kek, T0, T0);
    const variants: SigningKey[] = [
      { ...a, publicJwk: JSON.stringify({ ...jwkA, d: 'AAAA' }) },
      { ...a, publicJwk: JSON.stringify({ ...(JSON.parse(other.publicJwk) as object), kid: a.kid }) },
      { ...a, publicJwk: JSON.stringify({ ...jwkA, alg: 'ES256' }) },
      { ...a, alg: 'ES256' },
      { ...a, publicJwk: JSON.stringify({ ...jwkA, use: 'enc' }) },
      { ...a, publicJwk: JSON.stringify({ ...jwkA, jku: 'https://evil.example/jwks' }) },
      { ...a, publicJwk: JSON.stringify({ ...jwkA, kid: 'x' }) },
      { ...a, publicJwk: 'not json' },
      { ...a, publicJwk: '[]' },
      { ...b, publicJwk: JSON.stringify({ ...jwkB, y: undefined }) },
      { ...a, alg: 'HS256' as SigningAlgorithm },
    ];
    for (const row of variants) {
      const store = new MemoryKeyStore();
      await store.addSigningKey(row);
      await expect(KeyRing.load(store, kek)).rejects.toBeInstanceOf(SigningKeyError);
    }
  });

  it('a failed refresh keeps the previous keys in use (validate, then swap)', async () => {
    const store = new MemoryKeyStore();
    const kek = envKek();
    const { key } = await ensureSigningKey(store, kek, 'EdDSA', T0);
    const ring = await KeyRing.load(store, kek, { now: () => T0 });
    const broken = await generateSigningKey('EdDSA', envKek(), T0, T0);
    await store.addSigningKey(broken);
    await expect(ring.refresh()).rejects.toMatchObject({ code: 'undecryptable_key' });
    expect(ring.signingKey().kid).toBe(key.kid);
    expect(publishedKids(ring)).toEqual([key.kid]);
    expect(ring.verificationKey(broken.kid)).toBeUndefined();
  });
});

describe('rotation', () => {
  it('ensureSigningKey creates one immediately active key, then leaves the store alone', async () => {
    const store = new MemoryKeyStore();
    const kek = envKek();
    const first = await ensureSigningKey(store, kek, 'EdDSA', T0);
    expect(first.created).toBe(true);
    expect(first.key).toMatchObject({ createdAt: T0, activatesAt: T0, retiredAt: null, expiresAt: null });
    const again = await ensureSigningKey(store, kek, 'ES256', T0 + 1000);
    expect(again).toEqual({ key: first.key, created: false });
    expect(store.keys.size).toBe(1);
  });

  it('rotating an empty store activates at once (nothing to hand over from)', async () => {
    const store = new MemoryKeyStore();
    const kek = envKek();
    const key = await rotateSigningKey(store, kek, { alg: 'ES256', now: T0, activationDelayS: 3600, maxTokenLifetimeS: 600 });
    expect(key.activatesAt).toBe(T0);
    expect((await KeyRing.load(store, kek, { now: () => T0 })).signingKey().kid).toBe(key.kid);
  });

  it('rejects invalid rotation options', async () => {
    const store = new MemoryKeyStore();
    const kek = envKek();
    for (const bad of [
      { activationDelayS: -1, maxTokenLifetimeS: 600 },
      { activationDelayS: Number.NaN, maxTokenLifetimeS: 600 },
      { activationDelayS: 0, maxTokenLifetimeS: 0 },
      { activationDelayS: 0, maxTokenLifetimeS: Number.POSITIVE_INFINITY },
    ]) {
      await expect(rotateSigningKey(store, kek, { alg: 'EdDSA', now: T0, ...bad })).rejects.toMatchObject({ code: 'invalid_rotation' });
    }
    expect(store.keys.size).toBe(0);
  });

  it('a second rotation while one is pending hands over from the pending key, so every key eventually expires', async () => {
    const store = new MemoryKeyStore();
    const kek = envKek();
    let clock = T0;
    const { key: a } = await ensureSigningKey(store, kek, 'EdDSA', clock);
    const ring = await KeyRing.load(store, kek, { now: () => clock });
    clock += 1000;
    const b = await rotateSigningKey(store, kek, { alg: 'EdDSA', now: clock, activationDelayS: 600, maxTokenLifetimeS: 300 });
    clock += 1000;
    const c = await rotateSigningKey(store, kek, { alg: 'EdDSA', now: clock, activationDelayS: 600, maxTokenLifetimeS: 300 });
    await ring.refresh();
    expect(store.keys.get(a.kid)?.retiredAt).toBe(b.activatesAt);
    expect(store.keys.get(b.kid)?.retiredAt).toBe(c.activatesAt);
    expect(store.keys.get(c.kid)?.retiredAt).toBeNull();
    expect(publishedKids(ring)).toEqual([c.kid, b.kid, a.kid]);
    expect(ring.signingKey().kid).toBe(a.kid);
    clock = b.activatesAt;
    expect(ring.signingKey().kid).toBe(b.kid);
    clock = c.activatesAt;
    expect(ring.signingKey().kid).toBe(c.kid);
    clock = c.activatesAt + 300_000 + RETIREMENT_GRACE_MS;
    expect(publishedKids(ring)).toEqual([c.kid]);
  });
});

describe('emergency revocation (keys revoke)', () => {
  async function setup() {
    const store = new MemoryKeyStore();
    const kek = envKek();
    const clock = { now: T0 };
    const { key: a } = await ensureSigningKey(store, kek, 'EdDSA', clock.now);
    const ring = await KeyRing.load(store, kek, { now: () => clock.now });
    return { store, kek, clock, a, ring };
  }

  it('the only key: unpublished at once, and a new key (no publication delay) signs at once', async () => {
    const { store, kek, clock, a, ring } = await setup();
    clock.now += 5000;
    const outcome = await revokeSigningKey(store, kek, { kid: a.kid, alg: 'ES256', now: clock.now });
    expect(outcome.succession).toBe('created');
    expect(outcome.revoked).toMatchObject({ kid: a.kid, revokedAt: clock.now, retiredAt: clock.now, expiresAt: clock.now });
    await ring.refresh();
    expect(ring.verificationKey(a.kid)).toBeUndefined();
    expect(publishedKids(ring)).toEqual([outcome.signer?.kid]);
    expect(ring.signingKey()).toMatchObject({ kid: outcome.signer?.kid, alg: 'ES256' });
    expect(signingKeyStates([...store.keys.values()], clock.now).get(a.kid)).toBe('revoked');
    // Idempotent: a second revocation changes nothing and makes no key.
    const again = await revokeSigningKey(store, kek, { kid: a.kid, alg: 'EdDSA', now: clock.now + 1 });
    expect(again.revoked).toBeUndefined();
    expect(store.keys.size).toBe(2);
  });

  it('the signer during a rotation: the pending key signs now instead of after its delay', async () => {
    const { store, kek, clock, a, ring } = await setup();
    const b = await rotateSigningKey(store, kek, { alg: 'EdDSA', now: clock.now, activationDelayS: 600, maxTokenLifetimeS: 300 });
    clock.now += 1000;
    const outcome = await revokeSigningKey(store, kek, { kid: a.kid, alg: 'EdDSA', now: clock.now });
    // Dated back by the skew allowance, so gateways whose clocks run behind sign with it at once too.
    expect(outcome).toMatchObject({ succession: 'activated', signer: { kid: b.kid, activatesAt: clock.now - CLOCK_SKEW_ALLOWANCE_MS } });
    expect(store.keys.size).toBe(2);
    await ring.refresh();
    expect(ring.signingKey().kid).toBe(b.kid);
    expect(publishedKids(ring)).toEqual([b.kid]);
  });

  it('the pending key: the current signer keeps signing, and its handover is cancelled (never a gap)', async () => {
    const { store, kek, clock, a, ring } = await setup();
    const b = await rotateSigningKey(store, kek, { alg: 'EdDSA', now: clock.now, activationDelayS: 600, maxTokenLifetimeS: 300 });
    const outcome = await revokeSigningKey(store, kek, { kid: b.kid, alg: 'EdDSA', now: clock.now + 1000 });
    expect(outcome).toMatchObject({ succession: 'kept', signer: { kid: a.kid, retiredAt: null, expiresAt: null } });
    // Long after b would have taken over, a still signs.
    clock.now = b.activatesAt + 3_600_000;
    await ring.refresh();
    expect(ring.signingKey().kid).toBe(a.kid);
    expect(publishedKids(ring)).toEqual([a.kid]);
  });

  it('two rotations pending, the last revoked: the middle key keeps its place, so the succession never runs backwards', async () => {
    const { store, kek, clock, a, ring } = await setup();
    const b = await rotateSigningKey(store, kek, { alg: 'EdDSA', now: clock.now, activationDelayS: 600, maxTokenLifetimeS: 300 });
    const c = await rotateSigningKey(store, kek, { alg: 'EdDSA', now: clock.now + 1000, activationDelayS: 600, maxTokenLifetimeS: 300 });
    const outcome = await revokeSigningKey(store, kek, { kid: c.kid, alg: 'EdDSA', now: clock.now + 2000 });
    expect(outcome).toMatchObject({ succession: 'kept', signer: { kid: a.kid } });
    expect(store.keys.get(b.kid)).toMatchObject({ retiredAt: null, expiresAt: null });
    expect(store.keys.get(a.kid)?.retiredAt).toBe(b.activatesAt);
    clock.now = c.activatesAt + 3_600_000;
    await ring.refresh();
    expect(ring.signingKey().kid).toBe(b.kid);
  });

  it('a gateway whose clock runs behind the revoking machine drops the revoked key and signs with the new one at once', async () => {
    const { store, kek, clock, a, ring } = await setup();
    const revokedAt = clock.now + 30_000;
    const outcome = await revokeSigningKey(store, kek, { kid: a.kid, alg: 'EdDSA', now: revokedAt });
    await ring.refresh();
    // This gateway's clock still reads 30 s before the revocation.
    expect(ring.verificationKey(a.kid)).toBeUndefined();
    expect(ring.signingKey().kid).toBe(outcome.signer?.kid);
    expect(signingKeyStates([...store.keys.values()], clock.now).get(a.kid)).toBe('revoked');
  });

  it('a retired key still published: only it goes, signing is unchanged; an unknown kid is not_found', async () => {
    const { store, kek, clock, a, ring } = await setup();
    const b = await rotateSigningKey(store, kek, { alg: 'EdDSA', now: clock.now, activationDelayS: 0, maxTokenLifetimeS: 300 });
    clock.now += 1000;
    const outcome = await revokeSigningKey(store, kek, { kid: a.kid, alg: 'EdDSA', now: clock.now });
    expect(outcome).toMatchObject({ succession: 'unchanged', signer: { kid: b.kid } });
    await ring.refresh();
    expect(publishedKids(ring)).toEqual([b.kid]);
    const before = [...store.keys.values()];
    await expect(revokeSigningKey(store, kek, { kid: 'nope', alg: 'EdDSA', now: clock.now })).rejects.toMatchObject({ code: 'not_found' });
    expect([...store.keys.values()]).toEqual(before);
  });

  it('against SQLite: one transaction, and the revocation survives reopening the store', async () => {
    const file = path.join(dir, 'keys.db');
    const kek = envKek();
    const store = SqliteCredentialStore.open(file);
    const { key: a } = await ensureSigningKey(store, kek, 'EdDSA', T0);
    const outcome = await revokeSigningKey(store, kek, { kid: a.kid, alg: 'EdDSA', now: T0 + 10 });
    await store.close();
    const reopened = SqliteCredentialStore.open(file, { create: false });
    try {
      const keys = await reopened.listSigningKeys();
      expect(keys.find((k) => k.kid === a.kid)).toMatchObject({ revokedAt: T0 + 10, expiresAt: T0 + 10 });
      expect(keys.find((k) => k.kid === outcome.signer?.kid)).toMatchObject({
        createdAt: T0 + 10 - CLOCK_SKEW_ALLOWANCE_MS,
        activatesAt: T0 + 10 - CLOCK_SKEW_ALLOWANCE_MS,
        revokedAt: null,
      });
      // A change naming a row with other key material is refused whole: nothing of it is written.
      const forged = { ...keys[0]!, encryptedPrivateKey: 'x' };
      await expect(reopened.changeSigningKeys(() => ({ update: [forged], insert: [] }))).rejects.toMatchObject({ code: 'invalid' });
      expect(await reopened.listSigningKeys()).toEqual(keys);
    } finally {
      await reopened.close();
    }
  });
});

describe('rotation against SqliteCredentialStore', () => {
  it('publish first, sign later; the retired key stays published until its last token expired; then it is gone', async () => {
    const file = path.join(dir, 'gatehouse.db');
    const store = await SqliteCredentialStore.open(file);
    try {
      const kek = loadKeyEncryptionKey({ file: path.join(dir, 'master.key') });
      let clock = T0;
      const { key: a, created } = await ensureSigningKey(store, kek, 'EdDSA', clock);
      expect(created).toBe(true);
      const ring = await KeyRing.load(store, kek, { now: () => clock });
      expect(ring.signingKey().kid).toBe(a.kid);
      expect(signingKeyStates([a], clock).get(a.kid)).toBe('signing');

      clock = T0 + 10_000;
      const b = await rotateSigningKey(store, kek, { alg: 'ES256', now: clock, activationDelayS: 3600, maxTokenLifetimeS: 600 });
      expect(b).toMatchObject({ createdAt: clock, activatesAt: clock + 3_600_000, retiredAt: null, expiresAt: null });
      const rows = new Map((await store.listSigningKeys()).map((k) => [k.kid, k]));
      const oldRow = rows.get(a.kid);
      expect(oldRow).toMatchObject({ retiredAt: b.activatesAt, expiresAt: b.activatesAt + 600_000 + 60_000 });
      expect(rows.get(b.kid)).toEqual(b);
      const aExpires = b.activatesAt + 660_000;

      // Not visible until the ring re-reads the store; then without any restart.
      expect(ring.verificationKey(b.kid)).toBeUndefined();
      await ring.refresh();

      // Before activation: the old key signs, both are published (the new one first, so caches learn it early).
      clock = b.activatesAt - 1;
      expect(ring.signingKey().kid).toBe(a.kid);
      expect(publishedKids(ring)).toEqual([b.kid, a.kid]);
      expect(ring.verificationKey(b.kid)?.alg).toBe('ES256');
      const tokenA = await issue(ring, clock);
      expect(decodeProtectedHeader(tokenA).kid).toBe(a.kid);

      // From activation: the new key signs; the old one only verifies.
      clock = b.activatesAt;
      expect(ring.signingKey()).toMatchObject({ kid: b.kid, alg: 'ES256' });
      expect(publishedKids(ring)).toEqual([b.kid, a.kid]);
      const tokenB = await issue(ring, clock);
      expect(decodeProtectedHeader(tokenB)).toMatchObject({ kid: b.kid, alg: 'ES256' });
      expect(await verify(ring, tokenA, clock)).toBe('client-1');
      expect(await verify(ring, tokenB, clock)).toBe('client-1');

      // Up to the last moment the old key's last token could be valid (plus grace), it stays published.
      clock = aExpires - 1;
      expect(publishedKids(ring)).toEqual([b.kid, a.kid]);
      expect(ring.verificationKey(a.kid)).toBeDefined();

      // After expiresAt: neither published nor usable for verification.
      clock = aExpires;
      expect(publishedKids(ring)).toEqual([b.kid]);
      expect(ring.verificationKey(a.kid)).toBeUndefined();
      await expect(verify(ring, tokenA, clock - 600_000)).rejects.toThrow(/unknown kid/);
      expect(ring.signingKey().kid).toBe(b.kid);

      // Purging the expired row changes nothing visible.
      expect(await store.purgeExpiredSigningKeys(clock)).toBe(1);
      await ring.refresh();
      expect(publishedKids(ring)).toEqual([b.kid]);
      expect(await verify(ring, await issue(ring, clock), clock)).toBe('client-1');
    } finally {
      await store.close();
    }
  });

  it('refresh() picks up a rotation made through another KeyRing/store instance on the same file (no restart)', async () => {
    const file = path.join(dir, 'gatehouse.db');
    const kek = loadKeyEncryptionKey({ file: path.join(dir, 'master.key') });
    const storeA = await SqliteCredentialStore.open(file);
    const storeB = await SqliteCredentialStore.open(file);
    try {
      let clock = T0;
      const { key: first } = await ensureSigningKey(storeA, kek, 'EdDSA', clock);
      const gateway = await KeyRing.load(storeA, kek, { now: () => clock });
      const operator = await KeyRing.load(storeB, kek, { now: () => clock });
      expect(operator.signingKey().kid).toBe(first.kid);

      const next = await rotateSigningKey(storeB, kek, { alg: 'EdDSA', now: clock, activationDelayS: 30, maxTokenLifetimeS: 600 });
      await operator.refresh();
      expect(publishedKids(operator)).toEqual([next.kid, first.kid]);
      expect(publishedKids(gateway)).toEqual([first.kid]);

      await gateway.refresh();
      expect(publishedKids(gateway)).toEqual([next.kid, first.kid]);
      expect(gateway.signingKey().kid).toBe(first.kid);
      clock = next.activatesAt;
      expect(gateway.signingKey().kid).toBe(next.kid);
      const token = await issue(gateway, clock);
      expect(await verify(operator, token, clock)).toBe('client-1');

      // A restart (fresh ring, fresh store handle) sees the same state.
      const reopened = await SqliteCredentialStore.open(file);
      try {
        const fresh = await KeyRing.load(reopened, kek, { now: () => clock });
        expect(fresh.signingKey().kid).toBe(next.kid);
        expect(await verify(fresh, token, clock)).toBe('client-1');
      } finally {
        await reopened.close();
      }
    } finally {
      await storeA.close();
      await storeB.close();
    }
  });
});
