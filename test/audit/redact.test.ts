import { describe, expect, it } from 'vitest';
import { redactTarget } from '../../src/audit/redact.js';
import { startGateway } from '../support/harness.js';
import { request } from 'undici';

describe('LOG-02 credentials in targets never reach the audit', () => {
  it('redacts credential parameters by decoded, case-insensitive name and keeps everything else', () => {
    expect(redactTarget('/a?access_token=eyJ.x.y&page=2')).toBe('/a?access_token=REDACTED&page=2');
    expect(redactTarget('/a?Client_Secret=s3cr3t')).toBe('/a?Client_Secret=REDACTED');
    expect(redactTarget('/a?%61ccess_token=t')).toBe('/a?%61ccess_token=REDACTED');
    expect(redactTarget('/a?x=1&token')).toBe('/a?x=1&token=REDACTED');
    expect(redactTarget('/a?q=access_token')).toBe('/a?q=access_token');
    expect(redactTarget('/no-query')).toBe('/no-query');
    expect(redactTarget('/a?bad=%zz&code=abc')).toBe('/a?bad=%zz&code=REDACTED');
  });

  it('JWT-26 OA-02 a token or secret in the query is not written to the audit or the logs, allowed or refused', async () => {
    const gw = await startGateway();
    try {
      const agent = gw.agent();
      for (const path of ['/public/x?access_token=SECRET-TOKEN-1&a=1', '/nowhere?client_secret=SECRET-TOKEN-2']) {
        const res = await request(`${gw.origin}${path}`, { dispatcher: agent });
        await res.body.dump();
      }
      const audit = JSON.stringify(await gw.auditRecords());
      expect(audit).toContain('access_token=REDACTED');
      expect(audit).toContain('client_secret=REDACTED');
      expect(audit).not.toContain('SECRET-TOKEN');
      expect(gw.logs.join('')).not.toContain('SECRET-TOKEN');
    } finally {
      await gw.stop();
    }
  });
});
