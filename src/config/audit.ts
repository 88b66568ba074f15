// The `audit` section: where the chain is written, when it reaches the disk, what happens when it cannot, refusal
// aggregation, signed checkpoints and their export, and retention.
import { z } from 'zod';
import { durationMs } from './fields.js';

export const auditSchema = z
  .strictObject({
    dir: z.string().min(1).default('audit'),
    /**
     * The chain this gateway writes, named in its segment files. Default: the host name. Each gateway writing into
     * one directory needs its own (a second one with the same id refuses to start).
     */
    instance: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, 'letters, digits, "_" and "-", at most 64, starting with a letter or digit')
      .optional(),
    /**
     * When written records are forced to disk: `always` (before the request they admit goes on: survives power loss),
     * `interval` (every fsync_interval_ms: a process crash loses nothing, a power loss at most that interval), `off`
     * (the OS decides: a process crash loses nothing).
     */
    fsync: z.enum(['always', 'interval', 'off']).default('interval'),
    fsync_interval_ms: durationMs(60_000).default(1000),
    /**
     * When records cannot be written: `fail-closed` answers admitted requests 503 and fails readiness (refusals are
     * still enforced); `fail-open` serves on, counting and alerting the records it drops.
     */
    on_failure: z.enum(['fail-closed', 'fail-open']).default('fail-closed'),
    segment_max_bytes: z
      .int()
      .min(4096)
      .max(1024 ** 3)
      .default(64 * 1024 * 1024),
    segment_max_age_s: z
      .int()
      .min(1)
      .max(31 * 86_400)
      .default(86_400),
    /** Records waiting for the disk beyond this are refused (fail-closed) or dropped (fail-open). */
    max_buffered_bytes: z
      .int()
      .min(65_536)
      .max(1024 ** 3)
      .default(8 * 1024 * 1024),
    /**
     * LOG-08: per window, the first `after` refusals of one source (client address, claimed subject, code, route) are
     * recorded one by one; the rest are counted exactly into one refusals_aggregated record when the window ends. Past
     * `max_sources` sources in a window, newcomers share one bucket per code and route. A window therefore writes at
     * most max_sources × after individual refusals. Allows are never aggregated.
     */
    aggregate_refusals: z
      .strictObject({
        after: z.int().min(1).max(1_000_000_000).default(20),
        window_s: z.int().min(1).max(3600).default(10),
        max_sources: z.int().min(1).max(1_000_000).default(500),
      })
      .prefault({}),
    /** A checkpoint signed with the audit key after this many records, or this many seconds, whichever comes first. */
    checkpoint_every_records: z.int().min(1).max(10_000_000).default(1000),
    checkpoint_interval_s: z.int().min(1).max(86_400).default(60),
    /**
     * A directory outside `dir` (another volume, a mount shipped elsewhere) that receives each checkpoint as it is
     * written, for `audit verify --checkpoints`. Relative to data_dir.
     */
    checkpoint_export_dir: z.string().min(1).optional(),
    /**
     * An HTTPS collector that receives each checkpoint (POST, application/x-ndjson, retried with backoff until it
     * answers 2xx), its certificate checked against checkpoint_export_ca only (the system roots are not trusted).
     */
    checkpoint_export_url: z
      .url({ protocol: /^https$/, error: 'must be an https:// URL' })
      .refine((value) => {
        const url = new URL(value);
        return url.username === '' && url.password === '';
      }, 'must not carry a user name or password (use checkpoint_export_client_cert for mTLS)')
      .optional(),
    /** PEM file: the CA the collector's certificate must chain to. Relative to the config file. */
    checkpoint_export_ca: z.string().min(1).optional(),
    /** PEM certificate and key the gateway presents to the collector (mTLS); both or neither. */
    checkpoint_export_client_cert: z.string().min(1).optional(),
    checkpoint_export_client_key: z.string().min(1).optional(),
    /**
     * Retention: closed segments of a chain whose records are all older than max_age_days, or the oldest while the
     * chain is over max_total_bytes, are removed after a signed segments_pruned record names them (verify accepts
     * it; a hand deletion is still a missing segment). Absent: the log is kept forever.
     */
    retention: z
      .strictObject({
        max_age_days: z.int().min(1).max(36_500).optional(),
        max_total_bytes: z
          .int()
          .min(1024 * 1024)
          .optional(),
      })
      .optional(),
  })
  .superRefine((audit, ctx) => {
    if (audit.checkpoint_export_url !== undefined && audit.checkpoint_export_ca === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['checkpoint_export_ca'],
        message: "required with checkpoint_export_url: the CA that signs the collector's certificate",
      });
    }
    if (
      audit.checkpoint_export_url === undefined &&
      (audit.checkpoint_export_ca ?? audit.checkpoint_export_client_cert ?? audit.checkpoint_export_client_key) !== undefined
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['checkpoint_export_url'],
        message: 'checkpoint_export_ca and the client certificate need checkpoint_export_url',
      });
    }
    if ((audit.checkpoint_export_client_cert === undefined) !== (audit.checkpoint_export_client_key === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: ['checkpoint_export_client_key'],
        message: 'checkpoint_export_client_cert and checkpoint_export_client_key go together',
      });
    }
  });
