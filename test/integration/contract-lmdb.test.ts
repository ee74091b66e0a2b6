/** The contract suite of the public API (contract.ts) on LMDB: each runtime on a temp data dir of its own. */
import { runtimes } from '../helpers.js';
import { contractSuite } from './contract.js';
import { scheduleContract } from './contract-schedules.js';
import { inputsContract } from './contract-inputs.js';
import { subtasksContract } from './contract-subtasks.js';
import { capabilitiesContract } from './contract-capabilities.js';
import { metricsPortContract } from './contract-metrics-port.js';

const runtime = runtimes();

const lmdb = { open: (options = {}) => runtime({ threads: 1, slotsPerThread: 2, ...options }) };
contractSuite('LMDB', lmdb);
scheduleContract('LMDB', lmdb);
inputsContract('LMDB', lmdb);
subtasksContract('LMDB', lmdb);
capabilitiesContract('LMDB', lmdb);
metricsPortContract('LMDB', lmdb);
