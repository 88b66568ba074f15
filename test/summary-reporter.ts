/**
 * Vitest reporter that prints one plain closing line, `Tests: N passed, N failed, N skipped`,
 * which CI reads (vitest's own summary is not a format it recognises).
 *
 * - Skipped and todo tests count as neither passed nor failed.
 * - A module that failed without a failed test (import error, failing hook), an unhandled
 *   error, or a run that did not pass (interrupted, no tests found) counts at least one failure.
 * - In `vitest run` the line is written from a process 'exit' hook, so it comes after
 *   everything vitest itself prints (its summary, teardown warnings); in watch mode it is
 *   printed at the end of each run.
 */
import { writeSync } from 'node:fs';
import type { Reporter, SerializedError, TestModule, TestRunEndReason, Vitest } from 'vitest/node';

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

export function countResults(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError>, reason: TestRunEndReason): Counts {
  const counts: Counts = { passed: 0, failed: 0, skipped: 0 };
  for (const mod of testModules) {
    let failedInModule = 0;
    for (const test of mod.children.allTests()) {
      const state = test.result().state;
      if (state === 'passed') counts.passed += 1;
      else if (state === 'failed') failedInModule += 1;
      else if (state === 'skipped') counts.skipped += 1;
    }
    // Import errors and failing beforeAll/afterAll hooks fail the module without failing a test.
    const moduleFailed = mod.state() === 'failed' || mod.errors().length > 0;
    if (failedInModule === 0 && moduleFailed) failedInModule = 1;
    counts.failed += failedInModule;
  }
  counts.failed += unhandledErrors.length;
  if (reason !== 'passed' && counts.failed === 0) counts.failed = 1;
  return counts;
}

export function formatSummary(counts: Counts): string {
  const line = `Tests: ${counts.passed} passed, ${counts.failed} failed`;
  return counts.skipped > 0 ? `${line}, ${counts.skipped} skipped` : line;
}

function writeLine(line: string): void {
  try {
    writeSync(1, `${line}\n`);
  } catch {
    // stdout closed (EPIPE): nothing more to do.
  }
}

export default class SummaryReporter implements Reporter {
  private watch = false;
  private started = false;
  private pending: string | undefined;
  private hooked = false;

  onInit(vitest: Vitest): void {
    this.watch = Boolean(vitest.config.watch);
  }

  onTestRunStart(): void {
    this.started = true;
    this.pending = undefined;
    if (!this.watch && !this.hooked) {
      this.hooked = true;
      process.once('exit', () => {
        // A run that started but never reported its end (crash, kill) is a failure.
        writeLine(this.pending ?? formatSummary({ passed: 0, failed: 1, skipped: 0 }));
      });
    }
  }

  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError>, reason: TestRunEndReason): void {
    const line = formatSummary(countResults(testModules, unhandledErrors, reason));
    if (this.watch || !this.started) writeLine(line);
    else this.pending = line;
  }
}
