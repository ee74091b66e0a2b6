/**
 * The contract suite of the public API (contract.ts) on PostgreSQL: each runtime on a scratch
 * database of its own, on the tests' server (test/postgres-setup.ts), which never skips.
 */
import { createRuntime } from 'troupe';
import { scratchOnServer, scratchPools } from '../helpers.js';
import { pgRuntimes } from '../pg-runtime.js';
import { contractSuite, type ContractBackend } from './contract.js';
import { scheduleContract } from './contract-schedules.js';
import { inputsContract } from './contract-inputs.js';
import { subtasksContract } from './contract-subtasks.js';
import { capabilitiesContract } from './contract-capabilities.js';
import { metricsPortContract } from './contract-metrics-port.js';
import { faultsContract } from './contract-faults.js';
import { flowContract } from './contract-flow.js';
import { timersContract } from './contract-timers.js';
import { progressContract } from './contract-progress.js';
import { admissionContract } from './contract-admission.js';
import { workspaceContract } from './contract-workspace.js';
import { tsAgentsContract } from './contract-ts-agents.js';
import { shellContract } from './contract-shell.js';
import { closeContract } from './contract-close.js';

// Runtimes close (pgRuntimes' hook, registered second, runs first) before their databases are dropped.
const pools = scratchPools();
const runtime = pgRuntimes();

const postgres: ContractBackend = {
  open: async (options = {}) => {
    const { url } = await pools({ max: 1 });
    return runtime(url, options);
  },
  openKept: async (options = {}) => {
    const db = await scratchOnServer();
    const rt = await createRuntime({ threads: 1, slotsPerThread: 2, logger: false, ...options, store: { postgres: db.url } }).catch(async (error: unknown) => {
      await db.drop();
      throw error;
    });
    return {
      rt,
      close: async () => {
        await rt.close({ timeoutMs: 1_000, force: true });
        await db.drop();
      },
    };
  },
};
contractSuite('PostgreSQL', postgres);
scheduleContract('PostgreSQL', postgres);
inputsContract('PostgreSQL', postgres);
subtasksContract('PostgreSQL', postgres);
capabilitiesContract('PostgreSQL', postgres);
metricsPortContract('PostgreSQL', postgres);
faultsContract('PostgreSQL', postgres);
flowContract('PostgreSQL', postgres);
timersContract('PostgreSQL', postgres);
progressContract('PostgreSQL', postgres);
admissionContract('PostgreSQL', postgres);
workspaceContract('PostgreSQL', postgres);
tsAgentsContract('PostgreSQL', postgres);
shellContract('PostgreSQL', postgres);
closeContract('PostgreSQL', postgres);
