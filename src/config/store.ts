// The `store` section: the embedded SQLite file or a shared PostgreSQL server for clients, signing keys and revocations.
import { z } from 'zod';
import { durationMs } from './fields.js';

/** postgres:// or postgresql:// URLs (the password may be in it; it is never printed). */
export const POSTGRES_URL = /^postgres(ql)?:\/\/[^\s]+$/;

export const storeSchema = z
  .strictObject({
    /** Default: `postgres` when store.postgres is set, else `sqlite`. */
    backend: z.enum(['sqlite', 'postgres']).optional(),
    /** SQLite database file; relative to data_dir. */
    path: z.string().min(1).default('gatehouse.db'),
    /** PostgreSQL: the server's URL (GATEHOUSE_DATABASE_URL overrides it). Several gateways can share it. */
    postgres: z.string().regex(POSTGRES_URL, 'must be a postgres:// URL').optional(),
    /** The schema holding Gatehouse's tables; created with them when missing. */
    postgres_schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'lower-case letters, digits and _, at most 63')
      .default('gatehouse'),
    /** PEM file: the CA the server's certificate must chain to; TLS is then required. Relative to the config file. */
    postgres_ca: z.string().min(1).optional(),
    postgres_pool_max: z.int().min(1).max(100).default(10),
    /** Bounds connecting and every statement: a store that hangs answers "unavailable" instead of holding requests. */
    postgres_timeout_ms: durationMs(60_000).default(5000),
  })
  .superRefine((store, ctx) => {
    if (store.backend === 'postgres' && store.postgres === undefined)
      ctx.addIssue({ code: 'custom', path: ['postgres'], message: 'required with backend postgres' });
    if (store.backend === 'sqlite' && store.postgres !== undefined)
      ctx.addIssue({ code: 'custom', path: ['backend'], message: 'sqlite, but store.postgres is set' });
  })
  .transform((store) => ({ ...store, backend: store.backend ?? (store.postgres !== undefined ? ('postgres' as const) : ('sqlite' as const)) }));
