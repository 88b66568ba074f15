import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildConfig, ConfigError, loadConfigFile } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';

const dir = mkdtempSync(join(tmpdir(), 'gatehouse-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const minimal = (): ConfigInput => ({
  tls: { cert: 'server.pem', key: 'server-key.pem' },
  routes: [{ id: 'public', match: { path_prefix: '/public', methods: ['GET'] }, authn: ['none'], authz: { allow: 'anyone' }, handler: { service: 'echo' } }],
});

function problemsOf(document: unknown): readonly string[] {
  try {
    buildConfig(document, dir);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('config loading', () => {
  it('applies hardened defaults and resolves relative paths against the config directory', () => {
    const config = buildConfig(minimal(), dir);
    expect(config.server.port).toBe(8443);
    expect(config.limits.http2.max_concurrent_streams).toBe(100);
    expect(config.limits.keep_alive_timeout_ms).toBeLessThan(config.limits.headers_timeout_ms);
    expect(config.tls.cert).toBe(join(dir, 'server.pem'));
    expect(config.data_dir).toBe(join(dir, 'data'));
    expect(config.audit.dir).toBe(join(dir, 'data', 'audit'));
  });

  it('freezes the result deeply', () => {
    const config = buildConfig(minimal(), dir);
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.routes[0]?.match.methods)).toBe(true);
    expect(() => {
      (config.limits as { max_connections: number }).max_connections = 1;
    }).toThrow(TypeError);
  });

  it('rejects unknown keys at every level, naming the path', () => {
    const problems = problemsOf({ ...minimal(), limits: { max_conections: 5 }, extra: true });
    expect(problems.some((p) => p.startsWith('limits:') && p.includes('max_conections'))).toBe(true);
    expect(problems.some((p) => p.startsWith('(root)') && p.includes('extra'))).toBe(true);
  });

  it('reports every problem with its path, not just the first', () => {
    const problems = problemsOf({
      tls: { cert: 'a', key: 'b' },
      server: { port: 70000 },
      routes: [
        {
          id: 'UPPER',
          match: { path_prefix: 'no-slash', methods: ['TRACE'] },
          authn: ['none', 'mtls'],
          authz: { allow: 'anyone' },
          handler: { service: 'echo' },
        },
      ],
    });
    const paths = problems.map((p) => p.split(':')[0]);
    expect(paths).toEqual(expect.arrayContaining(['server.port', 'routes.0.id', 'routes.0.match.path_prefix', 'routes.0.match.methods.0']));
  });

  it('requires "none" to be the last authenticator and a credential-requiring route to have a real authenticator', () => {
    const route = { id: 'r', match: { path_prefix: '/r', methods: ['GET'] }, handler: { service: 'echo' } };
    expect(
      problemsOf({ ...minimal(), tls: { cert: 'a', key: 'b', client_ca: 'c' }, routes: [{ ...route, authn: ['none', 'mtls'], authz: { allow: 'anyone' } }] }),
    ).toEqual(expect.arrayContaining([expect.stringMatching(/^routes\.0\.authn: .*last/)]));
    expect(problemsOf({ ...minimal(), routes: [{ ...route, authn: ['none'], authz: { allow: 'authenticated' } }] })).toEqual(
      expect.arrayContaining([expect.stringMatching(/^routes\.0\.authz\.allow/)]),
    );
  });

  it('cross-checks references: unknown upstream, unknown quota, mtls without client_ca, duplicate ids and matches', () => {
    const route = (id: string, extra: object) => ({
      id,
      match: { path_prefix: '/x', methods: ['GET'] },
      authn: ['none'],
      authz: { allow: 'anyone' },
      ...extra,
    });
    const problems = problemsOf({
      tls: { cert: 'a', key: 'b' },
      routes: [
        route('a', { handler: { proxy: { upstream: 'missing' } }, quota: 'nope' }),
        route('a', { handler: { service: 'echo' } }),
        { id: 'm', match: { path_prefix: '/m', methods: ['GET'] }, authn: ['mtls'], authz: { allow: 'authenticated' }, handler: { service: 'echo' } },
      ],
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^routes\.0\.handler\.proxy\.upstream: unknown upstream/),
        expect.stringMatching(/^routes\.0\.quota: unknown quota/),
        expect.stringMatching(/^routes\.1\.id: duplicate route id/),
        expect.stringMatching(/^routes\.1\.match: another route/),
        expect.stringMatching(/^routes\.2\.authn: "mtls" needs tls.client_ca/),
      ]),
    );
  });

  it('tls.store_client_ca needs the issuer (its store), and stands in for client_ca for mtls routes', () => {
    const mtls = { id: 'm', match: { path_prefix: '/m', methods: ['GET'] }, authn: ['mtls'], authz: { allow: 'authenticated' }, handler: { service: 'echo' } };
    expect(problemsOf({ tls: { cert: 'a', key: 'b', store_client_ca: true }, routes: [mtls] })).toEqual([
      expect.stringMatching(/^tls\.store_client_ca: needs issuer/),
    ]);
    expect(() => buildConfig({ tls: { cert: 'a', key: 'b', store_client_ca: true }, issuer: {}, routes: [mtls] }, dir)).not.toThrow();
  });

  it('admin: someone must be able to administer, certificates need a client CA, one worker, a port of its own', () => {
    const echo = { id: 'p', match: { path_prefix: '/p', methods: ['GET'] }, authn: ['none'], authz: { allow: 'anyone' }, handler: { service: 'echo' } };
    const tls = { cert: 'a', key: 'b' };
    expect(problemsOf({ tls, routes: [echo], admin: {} })).toEqual([expect.stringMatching(/^admin\.subjects: nobody could administer/)]);
    expect(problemsOf({ tls, routes: [echo], admin: { subjects: ['spiffe://x/admin'] } })).toEqual([
      expect.stringMatching(/^admin\.subjects: admin certificate subjects need tls\.client_ca/),
    ]);
    expect(problemsOf({ tls, routes: [echo], issuer: {}, server: { workers: 2 }, admin: {} })).toEqual([expect.stringMatching(/^admin: .*one worker/)]);
    expect(problemsOf({ tls, routes: [echo], issuer: {}, server: { port: 9000 }, admin: { port: 9000 } })).toEqual([
      expect.stringMatching(/^admin\.port: .*port of its own/),
    ]);
    expect(() => buildConfig({ tls: { ...tls, client_ca: 'c' }, routes: [echo], admin: { subjects: ['spiffe://x/admin'] } }, dir)).not.toThrow();
  });

  it('refuses upstream URLs with credentials, query, fragment, non-http schemes or a base path that is not canonical', () => {
    const refused = [
      'http://user:pw@127.0.0.1:9000',
      'ftp://127.0.0.1',
      'http://127.0.0.1:9000/?q=1',
      'http://127.0.0.1:9000/api#x',
      'http://127.0.0.1:9000/api/../admin',
      'http://127.0.0.1:9000/api/./v2',
      'http://127.0.0.1:9000//api',
      'http://127.0.0.1:9000/api//v2',
      'http://127.0.0.1:9000/api%2f..%2fadmin',
      'http://127.0.0.1:9000/api%2e%2e',
      'http://127.0.0.1:9000\\api',
      'http://127.0.0.1:9000/a b',
    ];
    for (const url of refused) {
      const problems = problemsOf({ ...minimal(), upstreams: { app: { url } } });
      expect(
        problems.some((p) => p.startsWith('upstreams.app.url')),
        url,
      ).toBe(true);
    }
  });

  it('takes one target with a base path, or several with weights; each upstream is one service', () => {
    const one = buildConfig({ ...minimal(), upstreams: { app: { url: 'https://svc.internal/api/v2/', ca: 'ca.pem' } } }, '/etc/gatehouse');
    expect(one.upstreams['app']).toMatchObject({ targets: [{ origin: 'https://svc.internal', weight: 1 }], base_path: '/api/v2', balance: 'round_robin' });
    // Both kinds of health are on unless turned off.
    expect(one.upstreams['app']?.health).toEqual({ path: '/', interval_ms: 10_000, timeout_ms: 2000, healthy_after: 2, unhealthy_after: 3 });
    expect(one.upstreams['app']?.passive_health).toEqual({
      consecutive_failures: 5,
      failure_rate: 0.5,
      window_ms: 10_000,
      min_requests: 20,
      ejection_ms: 10_000,
      max_ejection_ms: 300_000,
    });
    const several = buildConfig(
      { ...minimal(), upstreams: { app: { targets: [{ url: 'http://10.0.0.1:80/v1', weight: 3 }, { url: 'http://10.0.0.2:8080/v1' }] } } },
      '/etc/gatehouse',
    );
    expect(several.upstreams['app']?.targets).toEqual([
      { origin: 'http://10.0.0.1', weight: 3 },
      { origin: 'http://10.0.0.2:8080', weight: 1 },
    ]);
    expect(several.upstreams['app']?.base_path).toBe('/v1');
    const problems = (app: unknown): readonly string[] => problemsOf({ ...minimal(), upstreams: { app } });
    expect(problems({ url: 'http://10.0.0.1', targets: [{ url: 'http://10.0.0.2' }] })).toEqual([
      expect.stringContaining('exactly one of `url` and `targets`'),
    ]);
    expect(problems({})).toEqual([expect.stringContaining('exactly one of `url` and `targets`')]);
    expect(problems({ targets: [{ url: 'http://10.0.0.1/a' }, { url: 'http://10.0.0.2/b' }] })).toEqual([
      expect.stringMatching(/^upstreams\.app\.targets\.1\.url: every target of an upstream has the same scheme and base path/),
    ]);
    expect(problems({ targets: [{ url: 'http://10.0.0.1' }, { url: 'http://10.0.0.1/' }] })).toEqual([
      expect.stringMatching(/targets\.1\.url: the same origin twice/),
    ]);
    expect(problems({ targets: [] })).toEqual([expect.stringMatching(/^upstreams\.app\.targets/)]);
    expect(problems({ url: 'http://10.0.0.1', targets: undefined, passive_health: { ejection_ms: 5000, max_ejection_ms: 1000 } })).toEqual([
      expect.stringMatching(/passive_health\.max_ejection_ms: must be at least ejection_ms/),
    ]);
  });

  it('refuses dot segments and non-canonical route prefixes', () => {
    for (const prefix of ['/a/../b', '/./a', '/a b', 'a', '/a%2Fb']) {
      const doc = minimal();
      const problems = problemsOf({ ...doc, routes: [{ ...doc.routes[0], match: { path_prefix: prefix, methods: ['GET'] } }] });
      expect(
        problems.some((p) => p.startsWith('routes.0.match.path_prefix')),
        prefix,
      ).toBe(true);
    }
  });

  it('validates trusted proxy CIDRs', () => {
    expect(problemsOf({ ...minimal(), server: { trusted_proxies: ['10.0.0.0/33', 'nonsense', '::1/129'] } })).toHaveLength(3);
    expect(() => buildConfig({ ...minimal(), server: { trusted_proxies: ['10.0.0.0/8', '::1', '192.168.1.1'] } }, dir)).not.toThrow();
  });

  it('redis: absent by default (limits count in memory); GATEHOUSE_REDIS_URL supplies it with the defaults, or replaces its url', () => {
    expect(buildConfig(minimal(), dir).redis).toBeUndefined();
    const fromEnv = buildConfig(minimal(), dir, { redisUrl: 'redis://127.0.0.1:6379/2' });
    expect(fromEnv.redis).toEqual({ url: 'redis://127.0.0.1:6379/2', timeout_ms: 250, key_prefix: 'gatehouse', instances: 1 });
    const file = buildConfig({ ...minimal(), redis: { url: 'rediss://cache.internal', ca: 'redis-ca.pem', instances: 3 } }, dir, {
      redisUrl: 'rediss://other',
    });
    expect(file.redis?.url).toBe('rediss://other');
    expect(file.redis?.instances).toBe(3);
    expect(file.redis?.ca).toBe(join(dir, 'redis-ca.pem'));
    expect(() => buildConfig(minimal(), dir, { redisUrl: 'http://127.0.0.1:6379' })).toThrow(/GATEHOUSE_REDIS_URL: must be a redis/);
    expect(
      problemsOf({ ...minimal(), redis: { url: 'localhost:6379', timeout_ms: 0, instances: 0, key_prefix: 'has space' } }).map((p) => p.split(':')[0]),
    ).toEqual(['redis.url', 'redis.timeout_ms', 'redis.key_prefix', 'redis.instances']);
  });

  it('quota_outage is degrade or deny, and only on a route with a quota', () => {
    const route = minimal().routes[0]!;
    const withQuota = { ...minimal(), quotas: { q: { points: 5, duration_s: 1 } } };
    expect(buildConfig({ ...withQuota, routes: [{ ...route, quota: 'q', quota_outage: 'deny' }] }, dir).routes[0]?.quota_outage).toBe('deny');
    expect(problemsOf({ ...withQuota, routes: [{ ...route, quota_outage: 'deny' }] })).toEqual(['routes.0.quota_outage: quota_outage needs quota']);
    expect(problemsOf({ ...withQuota, routes: [{ ...route, quota: 'q', quota_outage: 'open' }] })[0]).toMatch(/^routes\.0\.quota_outage:/);
  });

  it('applies command-line overrides before validation', () => {
    const config = buildConfig(minimal(), dir, { port: 0, host: '::1', dataDir: join(dir, 'elsewhere') });
    expect(config.server.port).toBe(0);
    expect(config.server.host).toBe('::1');
    expect(config.data_dir).toBe(join(dir, 'elsewhere'));
    expect(() => buildConfig(minimal(), dir, { port: 99_999 })).toThrow(ConfigError);
  });

  it('validates the document as written before an override replaces a key: --port cannot hide a bad server.port', () => {
    const problemsWith = (document: unknown, overrides: { port?: number; host?: string }): readonly string[] => {
      try {
        buildConfig(document, dir, overrides);
      } catch (error) {
        if (error instanceof ConfigError) return error.problems;
        throw error;
      }
      throw new Error('expected a ConfigError');
    };
    expect(problemsWith({ ...minimal(), server: { port: 'eighty' } }, { port: 0 })).toEqual([expect.stringMatching(/^server\.port: /)]);
    expect(problemsWith({ ...minimal(), server: { host: '' } }, { host: '127.0.0.1' })).toEqual([expect.stringMatching(/^server\.host: /)]);
    // A bad override on a good file is reported too, and said to come from the command line.
    expect(problemsWith(minimal(), { host: '' })).toEqual([expect.stringMatching(/^server\.host: .*command-line override/)]);
  });

  it('reports YAML syntax errors and duplicate keys with a line number', () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'server:\n  port: 1\n  port: 2\nroutes: [\n');
    expect(() => loadConfigFile(file)).toThrow(ConfigError);
    try {
      loadConfigFile(file);
    } catch (error) {
      expect((error as ConfigError).problems.join('\n')).toMatch(/line \d+/);
    }
  });

  it('bounds YAML alias expansion (billion laughs)', () => {
    const file = join(dir, 'laughs.yaml');
    const lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 9; i++) {
      const prev = String.fromCharCode(96 + i);
      const name = String.fromCharCode(97 + i);
      lines.push(`${name}: &${name} [${Array(10).fill(`*${prev}`).join(',')}]`);
    }
    writeFileSync(file, `${lines.join('\n')}\n`);
    expect(() => loadConfigFile(file)).toThrow(ConfigError);
  });

  it('reports an unreadable file as a config error', () => {
    expect(() => loadConfigFile(join(dir, 'missing.yaml'))).toThrow(/cannot read file \(ENOENT\)/);
  });

  it('the shipped example config is valid', () => {
    expect(() => loadConfigFile(join(import.meta.dirname, '../../config/gatehouse.example.yaml'))).not.toThrow();
  });

  describe('issuer, store and bearer routes', () => {
    const bearerRoute = (authz: Record<string, unknown>, authn: string[] = ['bearer']): unknown => ({
      id: 'api',
      match: { path_prefix: '/api', methods: ['GET'] },
      authn,
      authz: { allow: 'authenticated', ...authz },
      handler: { service: 'echo' },
    });

    it('resolves the store path against data_dir and defaults the issuer settings', () => {
      const config = buildConfig({ ...minimal(), issuer: {} }, dir);
      expect(config.store.path).toBe(join(dir, 'data', 'gatehouse.db'));
      expect(config.issuer?.signing_alg).toBe('EdDSA');
      expect(config.issuer?.access_token_ttl_s).toBe(600);
      expect(config.issuer?.client_auth.max_consecutive_failures).toBe(10);
      expect(buildConfig(minimal(), dir).issuer).toBeUndefined();
    });

    it('refuses a bearer route without an issuer, and scopes or audience on a route without bearer', () => {
      expect(problemsOf({ ...minimal(), routes: [bearerRoute({})] })).toEqual([expect.stringMatching(/^routes\.0\.authn: .*issuer/)]);
      const noBearer = problemsOf({
        ...minimal(),
        issuer: {},
        routes: [bearerRoute({ scopes: { all_of: ['a'] } }, ['mtls'])],
        tls: { cert: 'a', key: 'b', client_ca: 'c' },
      });
      expect(noBearer).toEqual([expect.stringMatching(/^routes\.0\.authz: .*bearer/)]);
    });

    it('refuses malformed scopes, audiences and scope rules', () => {
      const problems = problemsOf({
        ...minimal(),
        issuer: {},
        routes: [
          bearerRoute({ scopes: { all_of: ['has space'] } }),
          { ...(bearerRoute({ audience: 'not a uri' }) as object), id: 'b', match: { path_prefix: '/b', methods: ['GET'] } },
          { ...(bearerRoute({ audience: 'https://x.example/#frag' }) as object), id: 'c', match: { path_prefix: '/c', methods: ['GET'] } },
          { ...(bearerRoute({ scopes: { all_of: ['a'], any_of: ['b'] } }) as object), id: 'd', match: { path_prefix: '/d', methods: ['GET'] } },
        ],
      });
      expect(problems.map((p) => p.split(':')[0])).toEqual(
        expect.arrayContaining(['routes.0.authz.scopes.all_of.0', 'routes.1.authz.audience', 'routes.2.authz.audience', 'routes.3.authz.scopes']),
      );
    });

    it('accepts only an https origin as the issuer', () => {
      for (const issuer of ['http://gw.example', 'https://gw.example/path', 'https://gw.example?x=1', 'https://u:p@gw.example', 'https://gw.example#f']) {
        expect(problemsOf({ ...minimal(), issuer: { issuer } })).toEqual([expect.stringMatching(/^issuer\.issuer: /)]);
      }
      expect(buildConfig({ ...minimal(), issuer: { issuer: 'https://gw.example:9443' } }, dir).issuer?.issuer).toBe('https://gw.example:9443');
    });

    it('keeps routes off the issuer endpoints but lets a catch-all prefix coexist', () => {
      const route = (id: string, prefix: string): unknown => ({
        id,
        match: { path_prefix: prefix, methods: ['GET'] },
        authn: ['none'],
        authz: { allow: 'anyone' },
        handler: { service: 'echo' },
      });
      const problems = problemsOf({ ...minimal(), issuer: {}, routes: [route('a', '/oauth2/token'), route('b', '/.well-known/jwks.json/x'), route('c', '/')] });
      expect(problems).toEqual([
        expect.stringMatching(/^routes\.0\.match\.path_prefix: .*\/oauth2\/token/),
        expect.stringMatching(/^routes\.1\.match\.path_prefix: .*jwks/),
      ]);
      // Without an issuer those paths are ordinary prefixes.
      expect(() => buildConfig({ ...minimal(), routes: [route('a', '/oauth2/token')] }, dir)).not.toThrow();
    });
  });
});
