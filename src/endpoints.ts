/**
 * What a runtime serves over the network when asked: Prometheus `/metrics` (`metricsPort`) and the
 * dashboard. Opened once the runtime runs, closed first when it closes. Both runtimes use it: the
 * LMDB runtime with its metrics and the LMDB dashboard store, the PostgreSQL runtime
 * (src/cluster/runtime.ts) with its cluster metrics and the cluster's dashboard store, so the
 * host, content type, port errors and close behaviour are the same on both.
 */
import { LMDB_DASHBOARD, type DashboardRuntime, type DashboardStore } from './dashboard/api.js';
import type { ResolvedDashboard } from './dashboard/options.js';
import { serveDashboard, type DashboardServer } from './dashboard/server.js';
import type { Logger } from './log.js';
import type { MetricsServer } from './metrics/server.js';

/** What the endpoints serve `/metrics` from: src/metrics/metrics.ts RuntimeMetrics, src/cluster/metrics.ts ClusterMetrics. */
export interface ServesMetrics {
  /** Listens on 127.0.0.1:`port` (src/metrics/server.ts); INVALID_OPTIONS for a port that cannot be had. */
  serve(port: number): Promise<MetricsServer>;
}

/** See the module comment. */
export class Endpoints {
  #metrics: MetricsServer | undefined;
  #dashboard: DashboardServer | undefined;
  readonly #store: DashboardStore;

  /** `store`: the store the dashboard shows (src/dashboard/api.ts). */
  constructor(store: DashboardStore = LMDB_DASHBOARD) {
    this.#store = store;
  }

  /** Opens what the options ask for; throws INVALID_OPTIONS for a port that cannot be had. */
  async open(options: { metricsPort: number; dashboard: ResolvedDashboard | null }, metrics: ServesMetrics, rt: DashboardRuntime, log: Logger): Promise<void> {
    if (options.metricsPort > 0) this.#metrics = await metrics.serve(options.metricsPort);
    const dashboard = options.dashboard;
    if (dashboard) {
      this.#dashboard = await serveDashboard(rt, dashboard, this.#store);
      // A generated token is shown once: whoever runs the runtime needs it to open the page.
      if (dashboard.generated) log.warn({ url: this.#dashboard.url }, 'dashboard listening beyond loopback: open it with this URL (it holds the token)');
    }
  }

  get metricsPort(): number | undefined {
    return this.#metrics?.port;
  }

  /** The dashboard's URL (with `#token=` when it needs one); undefined when off. */
  get dashboardUrl(): string | undefined {
    return this.#dashboard?.url;
  }

  /**
   * Stops `/metrics` (dropping scrapes under way), then the dashboard (ending its streams), each as
   * a step of the runtime's close (which runs every step even when one fails).
   */
  async close(step: (name: string, fn: () => unknown) => Promise<void>): Promise<void> {
    await step('metrics', () => this.#metrics?.close());
    await step('dashboard', () => this.#dashboard?.close());
  }
}
