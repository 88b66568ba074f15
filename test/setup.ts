// Vitest setup file: @peculiar/x509 needs the reflect-metadata polyfill loaded before it is imported.
import 'reflect-metadata';

// better-sqlite3 12 on Node 24 aborts the process when a Statement is garbage-collected (see src/store/sqlite.ts).
// Tests also open raw connections to inspect and corrupt databases, so in test processes every statement is kept
// alive and pragma() goes through the retaining prepare.
import Database from 'better-sqlite3';

const retained = new Set<unknown>();
const prototype = Database.prototype as unknown as {
  prepare(this: Database.Database, source: string): Database.Statement;
  pragma(this: Database.Database, source: string, options?: { simple?: boolean }): unknown;
};
const originalPrepare = prototype.prepare;
const originalExec = (Database.prototype as unknown as { exec(this: Database.Database, source: string): Database.Database }).exec;
(Database.prototype as unknown as { exec(this: Database.Database, source: string): Database.Database }).exec = function exec(
  this: Database.Database,
  source: string,
): Database.Database {
  retained.add(this);
  return originalExec.call(this, source);
};
prototype.prepare = function prepare(this: Database.Database, source: string): Database.Statement {
  const statement = originalPrepare.call(this, source);
  // The connection too: its destructor trips the same assertion, and it owns transaction() statements.
  retained.add(this);
  retained.add(statement);
  return statement;
};
prototype.pragma = function pragma(this: Database.Database, source: string, options?: { simple?: boolean }): unknown {
  const statement = this.prepare(`PRAGMA ${source}`);
  if (!statement.reader) {
    statement.run();
    return options?.simple === true ? undefined : [];
  }
  return options?.simple === true ? statement.pluck().get() : statement.all();
};
