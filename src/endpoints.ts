/**
 * What a runtime serves over the network when asked: Prometheus `/metrics` and the dashboard.
 * Opened once the runtime runs, closed first when it closes.
 */
import type { Logger } from './log.js';
import type { RuntimeMetrics } from './metrics/metrics.js';
import type { ResolvedOptions } from './options.js';
import { serveDashboard, type DashboardServer } from './dashboard/server.js';
import type { DashboardRuntime } from './dashboard/api.js';

/** See the module comment. */
export class Endpoints {
  #metrics: { port: number; close(): Promise<void> } | undefined;
  #dashboard: DashboardServer | undefined;

  /** Opens what the options ask for; throws INVALID_OPTIONS for a port that cannot be had. */
  async open(options: ResolvedOptions, metrics: RuntimeMetrics, rt: DashboardRuntime, log: Logger): Promise<void> {
    if (options.metricsPort > 0) this.#metrics = await metrics.serve(options.metricsPort);
    const dashboard = options.dashboard;
    if (dashboard) {
      this.#dashboard = await serveDashboard(rt, dashboard);
      // A generated token is shown once: whoever runs the runtime needs it to open the page.
      if (dashboard.generated) log.warn({ url: this.#dashboard.url }, 'dashboard listening beyond loopback: open it with this URL (it holds the token)');
    }
  }

  get metricsPort(): number | undefined {
    return this.#metrics?.port;
  }

  get dashboardUrl(): string | undefined {
    return this.#dashboard?.url;
  }

  async closeMetrics(): Promise<void> {
    await this.#metrics?.close();
  }

  async closeDashboard(): Promise<void> {
    await this.#dashboard?.close();
  }
}
