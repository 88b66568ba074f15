// Access tokens as RFC 9068 JWTs: header typ at+jwt and the signing key's kid; claims iss, sub (= client_id), client_id,
// aud, scope, iat, exp and a 128-bit random jti. Signed with the KeyRing's current key (EdDSA by default, ES256 selectable).
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import type { KeyRing } from './key-ring.js';

export interface IssuedToken {
  readonly token: string;
  readonly jti: string;
  /** Epoch seconds. */
  readonly exp: number;
  readonly expiresIn: number;
}

export interface TokenGrant {
  readonly clientId: string;
  readonly scopes: readonly string[];
  /** One or more audiences; a single one is written as a string. */
  readonly audiences: readonly string[];
  /** The client's own token lifetime in seconds; null = the issuer's. Never longer than the issuer's. */
  readonly lifetimeS: number | null;
  /** RFC 9449: bind the token to the DPoP key with this RFC 7638 thumbprint (`cnf.jkt`). */
  readonly jkt?: string;
  /** RFC 8705: bind the token to the client certificate with this thumbprint (`cnf.x5t#S256`); never together with jkt. */
  readonly x5t?: string;
}

export class TokenSigner {
  constructor(
    private readonly ring: KeyRing,
    private readonly issuer: () => string,
    private readonly ttlS: number,
    private readonly now: () => number = Date.now,
  ) {}

  async issue(grant: TokenGrant): Promise<IssuedToken> {
    const key = this.ring.signingKey();
    const iat = Math.floor(this.now() / 1000);
    // Capped at the issuer's lifetime whatever a client row says: the bearer path's maximum token age and the time a
    // retired key stays published both assume no token lives longer.
    const ttlS = grant.lifetimeS === null ? this.ttlS : Math.min(grant.lifetimeS, this.ttlS);
    const exp = iat + ttlS;
    const jti = randomBytes(16).toString('base64url');
    const [single] = grant.audiences;
    const aud = grant.audiences.length === 1 && single !== undefined ? single : [...grant.audiences];
    const token = await new SignJWT({
      client_id: grant.clientId,
      ...(grant.scopes.length > 0 ? { scope: grant.scopes.join(' ') } : {}),
      ...(grant.jkt !== undefined ? { cnf: { jkt: grant.jkt } } : grant.x5t !== undefined ? { cnf: { 'x5t#S256': grant.x5t } } : {}),
    })
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' })
      .setIssuer(this.issuer())
      .setSubject(grant.clientId)
      .setAudience(aud)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(jti)
      .sign(key.privateKey);
    return { token, jti, exp, expiresIn: ttlS };
  }
}
