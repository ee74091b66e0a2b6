/**
 * Helpers of the cluster node tests: nodes started from the built package (their threads load the
 * built worker and agents), closed after each test; waits on the database; how many attempts a
 * node held at once, from its attempt rows; and what the stamp agent (fixtures/agents/stamp.agent.ts)
 * wrote of the attempts it ran.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterEach, expect } from 'vitest';
import { fixtureAgent, type FixtureAgent } from './helpers.js';
import type { ClusterNodeOptions, RunningClusterNode, startClusterNode as StartClusterNode } from '../src/cluster/node.js';

const built = (await import(new URL('../dist/src/cluster/node.js', import.meta.url).href)) as { startClusterNode: typeof StartClusterNode };

/** The built module URL of the bench's no-op agent. */
export const NOOP_AGENT = new URL('../dist/bench/noop.agent.js', import.meta.url);

/** Call at a test file's top level: returns a node factory whose nodes are closed after each test. */
export function clusterNodes(): (options: ClusterNodeOptions) => Promise<RunningClusterNode> {
  const nodes: RunningClusterNode[] = [];
  afterEach(async () => {
    for (const node of nodes.splice(0)) await node.close({ timeoutMs: 1_000 });
  });
  return async (options) => {
    const node = await built.startClusterNode({ logger: false, ...options });
    nodes.push(node);
    return node;
  };
}

/**
 * The children that run one node in a process of its own: a cluster node (fixtures/postgres/
 * cluster-node-child.ts) or a whole runtime on PostgreSQL (fixtures/postgres/runtime-node-child.ts).
 */
const CHILDREN = {
  node: fileURLToPath(new URL('../dist/test/fixtures/postgres/cluster-node-child.js', import.meta.url)),
  runtime: fileURLToPath(new URL('../dist/test/fixtures/postgres/runtime-node-child.js', import.meta.url)),
};

/** A cluster node in a process of its own. */
export interface NodeProcess {
  readonly id: string;
  readonly pid: number;
  /** Whether {@link NodeProcess.kill} was called. */
  killed: boolean;
  /** `kill -9`; resolves once the process is gone. */
  kill(): Promise<void>;
  /** SIGTERM: the node closes and the process exits; throws unless it exits 0. */
  close(): Promise<void>;
}

/**
 * Call at a test file's top level (after its scratch databases, so its processes go first):
 * returns a starter of node processes (`kind`: cluster nodes, or runtimes on PostgreSQL, which
 * register the agent with the cluster-wide `concurrency` when given) running the fixture agent
 * `agent` on one thread with `slots` slots, each killed after the test if it still runs. A start
 * resolves once the node has joined the cluster.
 */
export function nodeProcesses(kind: keyof typeof CHILDREN = 'node'): (url: string, agent: FixtureAgent, slots: number, concurrency?: number) => Promise<NodeProcess> {
  const kills: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const kill of kills.splice(0)) await kill();
  });
  return (url, agent, slots, concurrency) => {
    const args = [CHILDREN[kind], url, agent, fixtureAgent(agent).href, String(slots), ...(concurrency === undefined ? [] : [String(concurrency)])];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
    const kill = async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    };
    kills.push(kill);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    return new Promise((resolve, reject) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        const ready = /^ready (\S+) (\d+)$/.exec(line);
        if (!ready) return;
        const handle: NodeProcess = {
          id: ready[1]!,
          pid: Number(ready[2]),
          killed: false,
          kill: async () => {
            handle.killed = true;
            await kill();
          },
          close: async () => {
            child.kill('SIGTERM');
            const [code] = await exited;
            if (code !== 0) throw new Error(`node ${handle.id} exited ${code} on SIGTERM: ${stderr}`);
          },
        };
        resolve(handle);
      });
      child.once('exit', (code) => reject(new Error(`a node process exited ${code} before joining: ${stderr}`)));
    });
  };
}

/**
 * Resolves once `condition` (a database query, usually) holds, asking again every 10 ms (a poll,
 * so the test does not take a core from the nodes it watches); fails after `timeoutMs`.
 */
export async function until(condition: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** One integer a query returns (its first column of its first row). */
export async function count(pool: pg.Pool, sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await pool.query(sql, params);
  return Number(Object.values(rows[0] as object)[0]);
}

/**
 * The most attempts each node held at once, from the attempt rows: an attempt is held from its
 * claim (`started_at`) to its settle (`ended_at`), both on the database's clock. An end and a start
 * at the same instant do not overlap.
 */
export async function heldAtOnce(pool: pg.Pool): Promise<Map<string, number>> {
  const { rows } = await pool.query<{ node: string; start_us: string; end_us: string | null }>(
    `SELECT node, (extract(epoch FROM started_at) * 1e6)::bigint::text AS start_us, (extract(epoch FROM ended_at) * 1e6)::bigint::text AS end_us FROM troupe_attempts`,
  );
  const marks = new Map<string, Array<{ at: bigint; delta: number }>>();
  for (const r of rows) {
    const list = marks.get(r.node) ?? [];
    list.push({ at: BigInt(r.start_us), delta: 1 });
    if (r.end_us !== null) list.push({ at: BigInt(r.end_us), delta: -1 });
    marks.set(r.node, list);
  }
  const most = new Map<string, number>();
  for (const [node, list] of marks) {
    list.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : a.delta - b.delta));
    let now = 0;
    let max = 0;
    for (const { delta } of list) max = Math.max(max, (now += delta));
    most.set(node, max);
  }
  return most;
}

/** One attempt as the agent stamped it. */
export interface Stamp {
  taskId: string;
  attempt: number;
  pid: number;
  start: number;
  end?: number;
}

/** The agent's lines, by `taskId attempt`; a line cut short by a kill is left out. Fails on a start stamped twice. */
export function readStamps(file: string): Map<string, Stamp> {
  const stamps = new Map<string, Stamp>();
  const ends: Array<[string, number, number]> = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^([+-]) (\S+) (\d+) (\d+) (\d+)$/.exec(line);
    if (!m) continue;
    const key = `${m[2]} ${m[3]}`;
    if (m[1] === '-') ends.push([key, Number(m[4]), Number(m[5])]);
    else {
      expect(stamps.has(key), `attempt ${key} started twice`).toBe(false);
      stamps.set(key, { taskId: m[2]!, attempt: Number(m[3]), pid: Number(m[4]), start: Number(m[5]) });
    }
  }
  for (const [key, pid, at] of ends) {
    const stamp = stamps.get(key);
    expect(stamp, `attempt ${key} ended without starting`).toBeDefined();
    expect(stamp!.end, `attempt ${key} ended twice`).toBeUndefined();
    expect(stamp!.pid).toBe(pid);
    stamp!.end = at;
  }
  return stamps;
}

/** The most intervals [start, end) open at once; an end and a start at the same instant do not overlap. */
export function mostAtOnce(intervals: ReadonlyArray<readonly [number, number]>): number {
  const marks = intervals.flatMap(([start, end]) => [[start, 1], [end, -1]] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let most = 0;
  for (const [, delta] of marks) most = Math.max(most, (open += delta));
  return most;
}

/** An attempt row as the kill and chaos tests read it: its end as a flag, its error's code, and its end in epoch ms. */
export interface StoredAttempt {
  task_id: string;
  run: number;
  attempt: number;
  attempt_id: string;
  node: string;
  exit: string | null;
  ended: boolean;
  code: string | null;
  ended_ms: number | null;
}

/** Every attempt row, ordered by task, run and attempt. */
export async function storedAttempts(pool: pg.Pool): Promise<StoredAttempt[]> {
  const { rows } = await pool.query<StoredAttempt>(
    `SELECT task_id, run, attempt, attempt_id, node, exit, ended_at IS NOT NULL AS ended, error->>'code' AS code,
            floor(extract(epoch FROM ended_at) * 1000)::float8 AS ended_ms
       FROM troupe_attempts ORDER BY task_id, run, attempt`,
  );
  return rows;
}

/** The stored attempts of each task (rows ordered by task, run and attempt), by task id. */
export function attemptsByTask<A extends { task_id: string }>(attempts: readonly A[]): Map<string, A[]> {
  const byTask = new Map<string, A[]>();
  for (const a of attempts) byTask.set(a.task_id, [...(byTask.get(a.task_id) ?? []), a]);
  return byTask;
}

/**
 * A task's stored attempts are its one run's, numbered 1..n, as many as its attempt counter says;
 * those that count (not `interrupted`) are its `attempts`, within its budget.
 */
export function expectAttemptsOfOneRun(task: { attempt_seq: number; attempts: number; max_attempts: number }, rows: ReadonlyArray<{ run: number; attempt: number; exit: string | null }>): void {
  expect(rows.map((r) => [r.run, r.attempt])).toEqual(rows.map((_, i) => [1, i + 1]));
  expect(task.attempt_seq).toBe(rows.length);
  expect(task.attempts).toBe(rows.filter((r) => r.exit !== 'interrupted').length);
  expect(task.attempts).toBeLessThanOrEqual(task.max_attempts);
}
