// The real servers the scale-out tests use: PostgreSQL (GATEHOUSE_TEST_POSTGRES_URL). `.ci/run` sets the variable and
// GATEHOUSE_REQUIRE_SERVICES=1, so a CI run without them fails instead of skipping; a laptop without them skips those
// suites, each with a visible message. Every test store lives in a schema of its own, dropped when its file is done.
import { randomBytes } from 'node:crypto';

export const POSTGRES_URL: string | undefined = process.env['GATEHOUSE_TEST_POSTGRES_URL'] || undefined;

if (process.env['GATEHOUSE_REQUIRE_SERVICES'] === '1' && POSTGRES_URL === undefined) {
  throw new Error('GATEHOUSE_REQUIRE_SERVICES=1 but GATEHOUSE_TEST_POSTGRES_URL is not set');
}

const created: string[] = [];
const run = randomBytes(4).toString('hex');

/** A schema name no other test, file or run uses. */
export function testSchema(): string {
  const name = `gh_test_${run}_${process.pid}_${created.length + 1}`;
  created.push(name);
  return name;
}

/** Drops every schema this file created (for afterAll). */
export async function dropTestSchemas(): Promise<void> {
  if (POSTGRES_URL === undefined || created.length === 0) return;
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    for (const schema of created.splice(0)) await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}
