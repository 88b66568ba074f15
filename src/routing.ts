// The live route table: the routes of the configuration in force, with the upstreams and route quotas they are built from.
// A reload (SIGHUP) builds the next table beside the current one and swaps it in one step: a request is routed by the
// table it arrived under and finishes with the upstream and quota that table gave it. An upstream the reload removes or
// changes is retired: it takes no new request, its requests in flight finish on their connections, then they close.
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { ConfigError } from './config/load.js';
import type { Config } from './config/schema.js';
import type { Issuer } from './issuer/issuer.js';
import type { AuthenticatedRequest } from './pipeline/stage.js';
import { Upstream } from './proxy/upstream.js';
import { PrincipalQuota, type QuotaDeps } from './quota/principal.js';
import { compileRoutes } from './routes.js';
import { Router } from './server/router.js';

export interface RoutingParts {
  readonly issuer: Issuer | undefined;
  readonly quotas: QuotaDeps;
  readonly forwardedFor: (request: AuthenticatedRequest, received: string | string[] | undefined) => string;
  readonly log: Logger;
}

/** What a reload changed, by name (each list sorted; empty when nothing of its kind changed). */
export interface RoutingChange {
  readonly routes: number;
  readonly upstreamsAdded: readonly string[];
  readonly upstreamsChanged: readonly string[];
  readonly upstreamsRemoved: readonly string[];
  readonly quotasChanged: readonly string[];
}

interface Table {
  readonly config: Config;
  readonly upstreams: ReadonlyMap<string, Upstream>;
  readonly quotas: ReadonlyMap<string, PrincipalQuota>;
  readonly router: Router;
}

export class Routing {
  /** Upstreams a reload took out whose requests in flight are still finishing. */
  private readonly retiring = new Set<Upstream>();

  private constructor(
    private readonly parts: RoutingParts,
    private table: Table,
  ) {}

  /** The table of `config`: every upstream built and its host names resolved before the first request. */
  static async create(config: Config, parts: RoutingParts): Promise<Routing> {
    return new Routing(parts, await build(config, parts, undefined));
  }

  get router(): Router {
    return this.table.router;
  }

  get quotas(): ReadonlyMap<string, PrincipalQuota> {
    return this.table.quotas;
  }

  /** The upstreams of the table in force (retiring ones are not counted). */
  get upstreams(): ReadonlyMap<string, Upstream> {
    return this.table.upstreams;
  }

  /**
   * Builds the table of `next` and puts it in force. Upstreams and quotas whose settings did not change carry over as they
   * are (connections, health, counters); the others are new. Throws ConfigError, the current table untouched, when the
   * next cannot be built.
   */
  async reload(next: Config): Promise<RoutingChange> {
    const previous = this.table;
    const table = await build(next, this.parts, previous);
    this.table = table;
    const change = describe(previous, table);
    for (const [name, upstream] of previous.upstreams) {
      if (table.upstreams.get(name) === upstream) continue;
      this.retiring.add(upstream);
      this.parts.log.info({ upstream: name, in_flight: upstream.inFlight }, 'upstream retired by the reload: its requests in flight finish, then it closes');
      void upstream
        .retire()
        .catch((error: unknown) => this.parts.log.warn({ upstream: name, err: (error as Error).message }, 'closing a retired upstream failed'))
        .finally(() => this.retiring.delete(upstream));
    }
    return change;
  }

  /** At shutdown (every client connection gone): closes every upstream, retiring ones too, aborting what is still open. */
  async destroy(): Promise<void> {
    await Promise.all([...this.table.upstreams.values(), ...this.retiring].map((upstream) => upstream.destroy()));
  }
}

async function build(config: Config, parts: RoutingParts, previous: Table | undefined): Promise<Table> {
  const { log } = parts;
  const same = <T>(section: 'upstreams' | 'quotas', name: string, found: T | undefined): T | undefined =>
    found !== undefined && previous !== undefined && isDeepStrictEqual(previous.config[section][name], config[section][name]) ? found : undefined;
  const created: Upstream[] = [];
  try {
    const upstreams = new Map<string, Upstream>();
    for (const [name, settings] of Object.entries(config.upstreams)) {
      let upstream = same('upstreams', name, previous?.upstreams.get(name));
      if (upstream === undefined) {
        upstream = newUpstream(name, settings, log);
        created.push(upstream);
      }
      upstreams.set(name, upstream);
    }
    // Targets given by host name are resolved before the first request (a name that does not resolve yet has none).
    await Promise.all(created.map((upstream) => upstream.start()));
    const quotas = new Map(
      Object.entries(config.quotas).map(([name, quota]) => [
        name,
        same('quotas', name, previous?.quotas.get(name)) ?? new PrincipalQuota(name, quota, parts.quotas),
      ]),
    );
    const routes = compileRoutes({ config, upstreams, quotas, issuer: parts.issuer, forwardedFor: parts.forwardedFor, log });
    return { config, upstreams, quotas, router: new Router(routes) };
  } catch (error) {
    await Promise.all(created.map((upstream) => upstream.destroy()));
    throw error;
  }
}

/** An upstream of the configuration; a file it names that cannot be read (its `ca`) is a configuration error. */
function newUpstream(name: string, settings: Config['upstreams'][string], log: Logger): Upstream {
  try {
    return new Upstream(name, settings, log);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === undefined) throw error;
    throw new ConfigError('config', [`upstreams.${name}.ca: cannot read ${settings.ca ?? ''} (${code})`]);
  }
}

function describe(previous: Table, next: Table): RoutingChange {
  const names = (map: ReadonlyMap<string, unknown>, filter: (name: string) => boolean): string[] => [...map.keys()].filter(filter).sort();
  return {
    routes: next.config.routes.length,
    upstreamsAdded: names(next.upstreams, (name) => !previous.upstreams.has(name)),
    upstreamsChanged: names(next.upstreams, (name) => previous.upstreams.has(name) && previous.upstreams.get(name) !== next.upstreams.get(name)),
    upstreamsRemoved: names(previous.upstreams, (name) => !next.upstreams.has(name)),
    quotasChanged: names(next.quotas, (name) => previous.quotas.get(name) !== next.quotas.get(name)),
  };
}
