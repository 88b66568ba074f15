// Refusal paths of the OAuth endpoints' input handling, each with the real bytes: malformed form encoding, invalid UTF-8,
// malformed Basic credentials, conflicting client ids, repeated client credentials, over-long credentials — plus the
// parsers' own edge cases.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFormContentType, parseBasicCredentials, parseForm } from '../../src/issuer/form.js';
import type { TestGateway } from '../support/harness.js';
import { addClient, basicAuth, postForm, startIssuerGateway, withIssuer, type OAuthResponse, type TestClient } from '../support/issuer.js';

const CC = 'grant_type=client_credentials';

describe('OAuth endpoint input refusals (real requests)', () => {
  let gw: TestGateway;
  let client: TestClient;
  beforeAll(async () => {
    gw = await startIssuerGateway((base) => withIssuer(base, { client_auth: { per_ip: { points: 10_000, duration_s: 60 } } }));
    client = await addClient(gw);
  });
  afterAll(() => gw.stop());

  const token = (body: string, headers: Record<string, string> = {}): Promise<OAuthResponse> => postForm(gw, '/oauth2/token', body, headers);
  const expectOAuthError = (res: OAuthResponse, status: number, error: string): void => {
    expect(res.status).toBe(status);
    expect(res.json?.['error']).toBe(error);
    expect(res.json?.['access_token']).toBeUndefined();
    expect(res.headers['cache-control']).toBe('no-store');
  };

  it('malformed percent-encoding and invalid UTF-8 in the form are 400 invalid_request', async () => {
    const auth = { authorization: basicAuth(client.id, client.secret) };
    expectOAuthError(await token(`${CC}&scope=%zz`, auth), 400, 'invalid_request');
    expectOAuthError(await token(`${CC}&scope=%E2%28%A1`, auth), 400, 'invalid_request');
    expectOAuthError(await token(`${CC}&x=%`, auth), 400, 'invalid_request');
    // Control: the same client with a well-formed form gets a token.
    expect((await token(CC, auth)).status).toBe(200);
  });

  it('malformed Basic credentials are 400 invalid_request (bad base64, no colon, empty parts); another scheme is 401 invalid_client', async () => {
    const b64 = (text: string): string => Buffer.from(text).toString('base64');
    for (const authorization of [
      'Basic',
      'Basic !!!!',
      `Basic ${b64('no-colon-here')}`,
      `Basic ${b64(':secret')}`,
      `Basic ${b64('id:')}`,
      `Basic ${b64(client.id)}=`,
    ]) {
      expectOAuthError(await token(CC, { authorization }), 400, 'invalid_request');
    }
    const bearer = await token(CC, { authorization: 'Bearer abc.def.ghi' });
    expectOAuthError(bearer, 401, 'invalid_client');
    expect(bearer.headers['www-authenticate']).toMatch(/^Basic realm="gatehouse"/);
  });

  it('a client_id in the body must name the Basic client; repeated client credentials are refused', async () => {
    const auth = { authorization: basicAuth(client.id, client.secret) };
    expect((await token(`${CC}&client_id=${client.id}`, auth)).status).toBe(200);
    expectOAuthError(await token(`${CC}&client_id=someone-else`, auth), 400, 'invalid_request');
    expectOAuthError(await token(`${CC}&client_id=${client.id}&client_id=${client.id}&client_secret=${client.secret}`), 400, 'invalid_request');
    expectOAuthError(await token(`${CC}&client_id=${client.id}&client_secret=${client.secret}&client_secret=${client.secret}`), 400, 'invalid_request');
    // Half of client_secret_post is no client authentication at all.
    expectOAuthError(await token(`${CC}&client_id=${client.id}`), 401, 'invalid_client');
  });

  it('over-long credentials are refused like any wrong secret (401 invalid_client), and the right ones still work after', async () => {
    expectOAuthError(await token(CC, { authorization: basicAuth(client.id, 'x'.repeat(300)) }), 401, 'invalid_client');
    expectOAuthError(await token(CC, { authorization: basicAuth('i'.repeat(300), client.secret) }), 401, 'invalid_client');
    expect((await token(CC, { authorization: basicAuth(client.id, client.secret) })).status).toBe(200);
  });

  it('introspection and revocation need exactly one token parameter (400 invalid_request)', async () => {
    const auth = { authorization: basicAuth(client.id, client.secret) };
    for (const path of ['/oauth2/introspect', '/oauth2/revoke']) {
      expectOAuthError(await postForm(gw, path, '', auth), 400, 'invalid_request');
      expectOAuthError(await postForm(gw, path, 'token=a.b.c&token=d.e.f', auth), 400, 'invalid_request');
    }
  });
});

describe('form and Basic parsers', () => {
  it('parseForm: + is a space, empty values are omitted, repeats are kept for the caller, the parameter cap holds', () => {
    const parsed = parseForm(Buffer.from('a=1+2&b=&c&a=3&&d=%41'), 10);
    expect(parsed.ok && [...parsed.value]).toEqual([
      ['a', ['1 2', '3']],
      ['d', ['A']],
    ]);
    expect(parseForm(Buffer.from('a=1&'.repeat(11)), 10)).toMatchObject({ ok: false, reason: 'too many parameters' });
    expect(parseForm(Buffer.from([0x61, 0x3d, 0xff]), 10)).toMatchObject({ ok: false, reason: 'body is not UTF-8' });
  });

  it('parseBasicCredentials: form-urlencoded id and secret (RFC 6749 §2.3.1), other schemes not ours', () => {
    const header = `Basic ${Buffer.from('my%3Aid:s%C3%A9cret+x').toString('base64')}`;
    expect(parseBasicCredentials(header)).toEqual({ ok: true, value: { clientId: 'my:id', clientSecret: 'sécret x' } });
    expect(parseBasicCredentials(`basic ${Buffer.from('a:b').toString('base64')}`)).toMatchObject({ ok: true });
    expect(parseBasicCredentials('Bearer x')).toBeUndefined();
  });

  it('isFormContentType: the form type with no charset or UTF-8 only', () => {
    expect(isFormContentType('application/x-www-form-urlencoded')).toBe(true);
    expect(isFormContentType('Application/X-WWW-Form-Urlencoded; charset="UTF-8"')).toBe(true);
    expect(isFormContentType('application/x-www-form-urlencoded; charset=iso-8859-1')).toBe(false);
    expect(isFormContentType('application/json')).toBe(false);
    expect(isFormContentType(undefined)).toBe(false);
  });
});

/** No lone surrogate (those cannot be encoded as UTF-8, so they cannot round-trip). */
const wellFormed = (text: string): boolean => !/[\uD800-\uDFFF]/.test(text.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, ''));

describe('REL-09 parser properties (fast-check)', () => {
  it('parseForm never throws on arbitrary bytes, and reads back any form URLSearchParams writes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
        const parsed = parseForm(Buffer.from(bytes), 32);
        expect(typeof parsed.ok).toBe('boolean');
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 20, unit: 'binary' }), fc.string({ minLength: 1, maxLength: 40, unit: 'binary' })), {
          maxLength: 20,
        }),
        (pairs) => {
          const encoded = new URLSearchParams(pairs).toString();
          const parsed = parseForm(Buffer.from(encoded), 32);
          // Lone surrogates do not survive UTF-8; everything else must come back exactly, repeats in order.
          fc.pre(pairs.every(([k, v]) => wellFormed(k) && wellFormed(v)));
          expect(parsed.ok).toBe(true);
          if (!parsed.ok) return;
          const expected = new Map<string, string[]>();
          for (const [k, v] of pairs) expected.set(k, [...(expected.get(k) ?? []), v]);
          expect(new Map(parsed.value)).toEqual(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('parseBasicCredentials never throws, and reads back any id and secret encoded as RFC 6749 §2.3.1 says', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (header) => {
        const parsed = parseBasicCredentials(`Basic ${header}`);
        expect(parsed === undefined || typeof parsed.ok === 'boolean').toBe(true);
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 64, unit: 'binary' }), fc.string({ minLength: 1, maxLength: 64, unit: 'binary' }), (id, secret) => {
        fc.pre(wellFormed(id) && wellFormed(secret));
        const form = (text: string): string => new URLSearchParams([['', text]]).toString().slice(1);
        const header = `Basic ${Buffer.from(`${form(id)}:${form(secret)}`).toString('base64')}`;
        expect(parseBasicCredentials(header)).toEqual({ ok: true, value: { clientId: id, clientSecret: secret } });
      }),
      { numRuns: 300 },
    );
  });
});
