/** The contract suite of the public API (contract.ts) on LMDB: each runtime on a temp data dir of its own. */
import { runtimes, startRuntime } from '../helpers.js';
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

const runtime = runtimes();

const lmdb: ContractBackend = {
  open: (options = {}) => runtime({ threads: 1, slotsPerThread: 2, ...options }),
  openKept: async (options = {}) => {
    const { rt, stop } = await startRuntime({ threads: 1, slotsPerThread: 2, ...options });
    return { rt, close: stop };
  },
};
contractSuite('LMDB', lmdb);
scheduleContract('LMDB', lmdb);
inputsContract('LMDB', lmdb);
subtasksContract('LMDB', lmdb);
capabilitiesContract('LMDB', lmdb);
metricsPortContract('LMDB', lmdb);
faultsContract('LMDB', lmdb);
flowContract('LMDB', lmdb);
timersContract('LMDB', lmdb);
progressContract('LMDB', lmdb);
admissionContract('LMDB', lmdb);
workspaceContract('LMDB', lmdb);
tsAgentsContract('LMDB', lmdb);
shellContract('LMDB', lmdb);
closeContract('LMDB', lmdb);
