// Config loading: YAML text → zod validation (the file as written, then with command-line overrides) → relative paths resolved → deep-frozen Config.
// Every problem is reported with its path; nothing partially valid is ever returned.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve, sep } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { deepFreeze } from '../lib/deep-freeze.js';
import { configSchema, type Config } from './schema.js';
import { REDIS_URL, redisSchema } from './redis.js';
import { POSTGRES_URL } from './store.js';

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(source: string, problems: readonly string[]) {
    super(`invalid configuration in ${source}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export interface ConfigOverrides {
  readonly host?: string;
  readonly port?: number;
  /** `serve --admin-port`: the admin listener's port, when the file configures one (it never turns the listener on). */
  readonly adminPort?: number;
  /** Absolute, or relative to the current directory (a command-line argument). */
  readonly dataDir?: string;
  /** GATEHOUSE_DATABASE_URL: the PostgreSQL store, in place of the file's store settings. */
  readonly databaseUrl?: string;
  /** GATEHOUSE_REDIS_URL: the shared limiter store, in place of the file's redis.url (with the section's defaults). */
  readonly redisUrl?: string;
}

function describeIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.map((issue) => {
    const path = issue.path.length === 0 ? '(root)' : issue.path.map(String).join('.');
    return `${path}: ${issue.message}`;
  });
}

/** Validates an already-parsed document. `baseDir` anchors relative file paths (the config file's directory). */
export function buildConfig(document: unknown, baseDir: string, overrides: ConfigOverrides = {}, source = 'config'): Config {
  const withOverrides = applyOverrides(document, overrides);
  // The file must be valid on its own: an override is for one run, and the next run without it would fail on a key
  // that `--port` hid today. So the document as written is checked first, then the result of the overrides.
  if (withOverrides !== document) {
    const asWritten = configSchema.safeParse(document);
    if (!asWritten.success) throw new ConfigError(source, describeIssues(asWritten.error.issues));
  }
  const result = configSchema.safeParse(withOverrides);
  if (!result.success) {
    const problems = describeIssues(result.error.issues);
    throw new ConfigError(source, withOverrides === document ? problems : problems.map((problem) => `${problem} (from a command-line override)`));
  }
  const config = result.data;
  const at = (p: string): string => (isAbsolute(p) ? p : resolve(baseDir, p));
  config.tls.cert = at(config.tls.cert);
  config.tls.key = at(config.tls.key);
  if (config.tls.client_ca !== undefined) config.tls.client_ca = at(config.tls.client_ca);
  for (const upstream of Object.values(config.upstreams)) {
    if (upstream.ca !== undefined) upstream.ca = at(upstream.ca);
  }
  config.data_dir = overrides.dataDir !== undefined ? resolve(overrides.dataDir) : at(config.data_dir);
  config.audit.dir = isAbsolute(config.audit.dir) ? config.audit.dir : resolve(config.data_dir, config.audit.dir);
  if (config.audit.checkpoint_export_dir !== undefined) {
    const exportDir = isAbsolute(config.audit.checkpoint_export_dir)
      ? config.audit.checkpoint_export_dir
      : resolve(config.data_dir, config.audit.checkpoint_export_dir);
    // Checkpoints kept beside the log they vouch for prove nothing to someone who can rewrite that directory.
    if (exportDir === config.audit.dir || exportDir.startsWith(`${config.audit.dir}${sep}`)) {
      throw new ConfigError(source, ['audit.checkpoint_export_dir: must be outside audit.dir']);
    }
    config.audit.checkpoint_export_dir = exportDir;
  }
  if (config.audit.checkpoint_export_ca !== undefined) config.audit.checkpoint_export_ca = at(config.audit.checkpoint_export_ca);
  if (config.audit.checkpoint_export_client_cert !== undefined) config.audit.checkpoint_export_client_cert = at(config.audit.checkpoint_export_client_cert);
  if (config.audit.checkpoint_export_client_key !== undefined) config.audit.checkpoint_export_client_key = at(config.audit.checkpoint_export_client_key);
  if (overrides.databaseUrl !== undefined) {
    if (!POSTGRES_URL.test(overrides.databaseUrl)) throw new ConfigError(source, ['GATEHOUSE_DATABASE_URL: must be a postgres:// URL']);
    config.store.postgres = overrides.databaseUrl;
    config.store.backend = 'postgres';
  }
  if (config.store.postgres_ca !== undefined) config.store.postgres_ca = at(config.store.postgres_ca);
  if (overrides.redisUrl !== undefined) {
    if (!REDIS_URL.test(overrides.redisUrl)) throw new ConfigError(source, ['GATEHOUSE_REDIS_URL: must be a redis:// or rediss:// URL']);
    config.redis = config.redis === undefined ? redisSchema.parse({ url: overrides.redisUrl }) : { ...config.redis, url: overrides.redisUrl };
  }
  if (config.redis?.ca !== undefined) config.redis.ca = at(config.redis.ca);
  config.store.path = isAbsolute(config.store.path) ? config.store.path : resolve(config.data_dir, config.store.path);
  return deepFreeze(config);
}

function applyOverrides(document: unknown, overrides: ConfigOverrides): unknown {
  if (overrides.host === undefined && overrides.port === undefined && overrides.adminPort === undefined) return document;
  if (typeof document !== 'object' || document === null || Array.isArray(document)) return document;
  const root = document as Record<string, unknown>;
  const server = typeof root['server'] === 'object' && root['server'] !== null ? (root['server'] as Record<string, unknown>) : {};
  const admin = root['admin'];
  return {
    ...root,
    ...(overrides.adminPort !== undefined && typeof admin === 'object' && admin !== null ? { admin: { ...admin, port: overrides.adminPort } } : {}),
    server: {
      ...server,
      ...(overrides.host !== undefined ? { host: overrides.host } : {}),
      ...(overrides.port !== undefined ? { port: overrides.port } : {}),
    },
  };
}

export function loadConfigFile(file: string, overrides: ConfigOverrides = {}): Config {
  return configFromText(readConfigText(file), file, overrides);
}

/** The config file's text, as `configFromText` takes it. */
export function readConfigText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new ConfigError(file, [`cannot read file (${code})`]);
  }
}

/**
 * A config from the text of `file` (read earlier, perhaps by another process: the workers of `serve --workers N` run the
 * text the primary read, whatever the file says by the time one is replaced). Relative paths are anchored at the file's
 * directory.
 */
export function configFromText(text: string, file: string, overrides: ConfigOverrides = {}): Config {
  // Aliases are bounded so a hostile or broken file cannot expand into a billion laughs.
  const document = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (document.errors.length > 0) {
    throw new ConfigError(
      file,
      document.errors.map((e) => `YAML ${e.code} at line ${e.linePos?.[0]?.line ?? '?'}: ${e.message.split('\n')[0] ?? ''}`),
    );
  }
  let value: unknown;
  try {
    value = document.toJS({ maxAliasCount: 50 });
  } catch (error) {
    // yaml throws (a ReferenceError) when alias expansion passes the bound: a hostile or broken file, not a crash.
    throw new ConfigError(file, [`YAML: ${(error as Error).message}`]);
  }
  return buildConfig(value, dirname(resolve(file)), overrides, file);
}
