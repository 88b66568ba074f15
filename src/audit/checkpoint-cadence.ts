// When the audit log signs a checkpoint: exactly every N records (of any kind but checkpoints: verify holds a chain to
// this cadence), early once the oldest record no checkpoint covers has waited the interval out, and at close. The log
// signs; this only counts.
export class CheckpointCadence {
  private since = 0;
  /** When the oldest record no checkpoint covers yet joined the chain (meaningful while `since` > 0). */
  private oldest = 0;

  constructor(
    private readonly everyRecords: number,
    private readonly intervalMs: number,
  ) {}

  /** Whether any record waits for a signature. */
  get uncovered(): boolean {
    return this.since > 0;
  }

  /** A record that needs covering joined the chain (`now` is asked only for the first one): true when it completes the N. */
  counted(now: () => number): boolean {
    if (this.since++ === 0) this.oldest = now();
    return this.since >= this.everyRecords;
  }

  /** Whether the oldest uncovered record has waited at least the interval. */
  stale(now: number): boolean {
    return this.since > 0 && now - this.oldest >= this.intervalMs;
  }

  /** A checkpoint now covers every record. */
  signed(): void {
    this.since = 0;
  }
}
