// PKCS#12 (RFC 7292) for tools that want the certificate and its key in one file (browsers, Java, Windows, curl --cert-type
// P12): the certificate in a certBag, the key in a pkcs8ShroudedKeyBag encrypted with PBES2 (PBKDF2-HMAC-SHA256,
// AES-256-CBC), and the whole protected by an HMAC-SHA256 integrity MAC — OpenSSL 3's defaults, which `openssl pkcs12`
// and every current tool read. Written with a small DER encoder: the structure is fixed, and each field is visible here.
import { createCipheriv, createHash, createHmac, pbkdf2Sync, randomBytes, X509Certificate } from 'node:crypto';

const OID = {
  data: '1.2.840.113549.1.7.1',
  pkcs8ShroudedKeyBag: '1.2.840.113549.1.12.10.1.2',
  certBag: '1.2.840.113549.1.12.10.1.3',
  x509Certificate: '1.2.840.113549.1.9.22.1',
  friendlyName: '1.2.840.113549.1.9.20',
  localKeyId: '1.2.840.113549.1.9.21',
  pbes2: '1.2.840.113549.1.5.13',
  pbkdf2: '1.2.840.113549.1.5.12',
  hmacWithSha256: '1.2.840.113549.2.9',
  aes256Cbc: '2.16.840.1.101.3.4.1.42',
  sha256: '2.16.840.1.101.3.4.2.1',
} as const;

/** PBKDF2 and MAC iterations: OpenSSL 3's default for both. */
const ITERATIONS = 2048;

// ---- DER ----

function tlv(tag: number, content: Buffer): Buffer {
  const n = content.length;
  const length = n < 0x80 ? Buffer.from([n]) : lengthBytes(n);
  return Buffer.concat([Buffer.from([tag]), length, content]);
}

function lengthBytes(n: number): Buffer {
  const bytes: number[] = [];
  for (let rest = n; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

const seq = (...items: Buffer[]): Buffer => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]): Buffer => tlv(0x31, Buffer.concat(items));
const octets = (bytes: Buffer): Buffer => tlv(0x04, bytes);
const explicit0 = (inner: Buffer): Buffer => tlv(0xa0, inner);
const nul = (): Buffer => Buffer.from([0x05, 0x00]);

function integer(value: number): Buffer {
  const bytes: number[] = [];
  for (let rest = value; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
  if (bytes.length === 0 || (bytes[0] as number) >= 0x80) bytes.unshift(0);
  return tlv(0x02, Buffer.from(bytes));
}

function oid(dotted: string): Buffer {
  const [first = 0, second = 0, ...rest] = dotted.split('.').map(Number);
  const bytes: number[] = [first * 40 + second];
  for (const arc of rest) {
    const chunk: number[] = [arc & 0x7f];
    for (let value = Math.floor(arc / 128); value > 0; value = Math.floor(value / 128)) chunk.unshift((value & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return tlv(0x06, Buffer.from(bytes));
}

/** BMPString (UTF-16BE) as PKCS#12 wants names and passwords (RFC 7292 B.1); `terminated` adds the two zero bytes. */
function bmp(text: string, terminated: boolean): Buffer {
  const le = Buffer.from(text + (terminated ? '\0' : ''), 'utf16le');
  return Buffer.from(le).swap16();
}

// ---- RFC 7292 Appendix B.2: the key derivation of the integrity MAC ----

function pkcs12Kdf(password: string, salt: Buffer, id: number, iterations: number, size: number): Buffer {
  const u = 32; // SHA-256 output
  const v = 64; // SHA-256 block
  const fill = (source: Buffer): Buffer => {
    if (source.length === 0) return Buffer.alloc(0);
    const out = Buffer.alloc(v * Math.ceil(source.length / v));
    for (let i = 0; i < out.length; i++) out[i] = source[i % source.length] as number;
    return out;
  };
  const d = Buffer.alloc(v, id);
  const i = Buffer.concat([fill(salt), fill(bmp(password, true))]);
  const out: Buffer[] = [];
  for (let produced = 0; produced < size; produced += u) {
    let a = createHash('sha256').update(d).update(i).digest();
    for (let round = 1; round < iterations; round++) a = createHash('sha256').update(a).digest();
    out.push(a);
    const b = fill(a);
    // I_j = (I_j + B + 1) mod 2^(8v), for every v-byte block of I.
    for (let j = 0; j < i.length; j += v) {
      let carry = 1;
      for (let k = v - 1; k >= 0; k--) {
        const sum = (i[j + k] as number) + (b[k] as number) + carry;
        i[j + k] = sum & 0xff;
        carry = sum >> 8;
      }
    }
  }
  return Buffer.concat(out).subarray(0, size);
}

// ---- The file ----

function encryptedKeyInfo(pkcs8Der: Buffer, password: string): Buffer {
  const salt = randomBytes(16);
  const iv = randomBytes(16);
  const key = pbkdf2Sync(Buffer.from(password, 'utf8'), salt, ITERATIONS, 32, 'sha256');
  const cipher = createCipheriv('aes-256-cbc', key, iv);
  const encrypted = Buffer.concat([cipher.update(pkcs8Der), cipher.final()]);
  const pbkdf2Params = seq(octets(salt), integer(ITERATIONS), seq(oid(OID.hmacWithSha256), nul()));
  const pbes2Params = seq(seq(oid(OID.pbkdf2), pbkdf2Params), seq(oid(OID.aes256Cbc), octets(iv)));
  return seq(seq(oid(OID.pbes2), pbes2Params), octets(encrypted));
}

function dataContentInfo(content: Buffer): Buffer {
  return seq(oid(OID.data), explicit0(octets(content)));
}

/**
 * A PKCS#12 file holding `certPem` and, when given, its PKCS#8 `keyPkcs8Pem` (encrypted), the file MAC-protected under
 * `password`. `friendlyName` labels the bags (what a keychain shows).
 */
export function pkcs12(certPem: string, keyPkcs8Pem: string | undefined, password: string, friendlyName: string): Buffer {
  const certDer = new X509Certificate(certPem).raw;
  // The key and the certificate are paired by this id (the certificate's SHA-1, as OpenSSL does).
  const localKeyId = createHash('sha1').update(certDer).digest();
  const attributes = set(seq(oid(OID.friendlyName), set(tlv(0x1e, bmp(friendlyName, false)))), seq(oid(OID.localKeyId), set(octets(localKeyId))));
  const certBag = seq(oid(OID.certBag), explicit0(seq(oid(OID.x509Certificate), explicit0(octets(certDer)))), attributes);
  const contents = [dataContentInfo(seq(certBag))];
  if (keyPkcs8Pem !== undefined) {
    const keyDer = Buffer.from(keyPkcs8Pem.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, '').replace(/\s+/g, ''), 'base64');
    contents.push(dataContentInfo(seq(seq(oid(OID.pkcs8ShroudedKeyBag), explicit0(encryptedKeyInfo(keyDer, password)), attributes))));
  }
  const authenticatedSafe = seq(...contents);
  const macSalt = randomBytes(16);
  const macKey = pkcs12Kdf(password, macSalt, 3, ITERATIONS, 32);
  const mac = createHmac('sha256', macKey).update(authenticatedSafe).digest();
  const macData = seq(seq(seq(oid(OID.sha256), nul()), octets(mac)), octets(macSalt), integer(ITERATIONS));
  return seq(integer(3), dataContentInfo(authenticatedSafe), macData);
}
