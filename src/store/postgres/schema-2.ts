/**
 * The PostgreSQL schema from version 12 on (migrations.ts runs them; schema-1.ts holds the earlier
 * ones). Append only: a released version never changes.
 */
import type { Migration } from './migrations.js';

/** Versions 12 on. */
export const MIGRATIONS_2: readonly Migration[] = [
  {
    version: 12,
    name: 'task policies and sleeps',
    // A task's own `timeoutMs` and retry policy (the fields of RetryPolicy it gave but
    // maxAttempts, which is `max_attempts`), as given at submit: NULL where it gave none. The node
    // that claims the task lays them over its agent's registration (queue.ts ClaimedTask), so a
    // task submitted on a runtime that does not run its agent keeps what it asked for.
    // Sleeping tasks (an agent returned `{ kind: 'sleep', wakeAfterMs, followUp }`): `run_at` is
    // the wake, `follow_up` what the runs after it see as ctx.followUp, and
    // `troupe_tasks_sleeping` finds the sleepers due (wakes.ts); only a sleeping row version has
    // an entry, so no other write pays for it. No default to fill: no row is rewritten.
    sql: `
      ALTER TABLE troupe_tasks ADD COLUMN timeout_ms bigint CHECK (timeout_ms >= 0),
        ADD COLUMN retry jsonb CHECK (retry IS NULL OR jsonb_typeof(retry) = 'object'),
        ADD COLUMN follow_up jsonb;
      CREATE INDEX troupe_tasks_sleeping ON troupe_tasks (run_at) WHERE state = 'sleeping';`,
  },
  {
    version: 13,
    name: 'schedule policies',
    // The LMDB runtime's schedule policies (schedules.ts): the `queue_one` overlap and the tick it
    // holds back (`pending_tick`), and the catch-up policy with its window. Rows from before keep
    // what they did: every due tick fires (`all`, with no window). `troupe_schedules_pending`
    // lets a fire find the held ticks without reading every schedule; it costs nothing on the
    // task queue, and a schedule's row is written once per tick anyway.
    sql: `
      ALTER TABLE troupe_schedules DROP CONSTRAINT troupe_schedules_overlap_check,
        ADD CONSTRAINT troupe_schedules_overlap_check CHECK (overlap IN ('skip', 'allow', 'queue_one')),
        ADD COLUMN catch_up text NOT NULL DEFAULT 'all' CHECK (catch_up IN ('skip', 'once', 'all')),
        ADD COLUMN catch_up_window_ms bigint NOT NULL DEFAULT ${Number.MAX_SAFE_INTEGER} CHECK (catch_up_window_ms >= 0),
        ADD COLUMN pending_tick timestamptz;
      ALTER TABLE troupe_schedules ALTER COLUMN catch_up DROP DEFAULT, ALTER COLUMN catch_up_window_ms DROP DEFAULT;
      CREATE INDEX troupe_schedules_pending ON troupe_schedules (id) WHERE pending_tick IS NOT NULL;`,
  },
  {
    version: 14,
    name: 'kill',
    // rt.kill() (control.ts killCluster): whether the freeze on the control row is a kill's. While
    // it is, every node stops the attempts it holds (all claimed before the kill: nothing is
    // claimed while frozen), whether it heard the kill's NOTIFY or reads the row at a lease
    // renewal. A freeze from unfrozen and an unfreeze clear it.
    sql: `ALTER TABLE troupe_control ADD COLUMN killed boolean NOT NULL DEFAULT false;`,
  },
  {
    version: 15,
    name: 'inputs',
    // Interactive inputs (rt.sendInput, ctx.waitForInput; inbox.ts). `troupe_inbox` holds each
    // task's inputs keyed (task, seq), seq 1, 2, … in the order they were sent; an idempotency key
    // is unique per task (a partial index: keyless items have no entry). On the task's row:
    // `inbox`, how many inputs it was sent, `delivered`, how many its agents have taken (an item
    // is delivered when its seq is at most that: no write to the item when it is handed over, and
    // one to the task's counter when an input handed to an attempt that never took it is given
    // back), and `waiting_for` ({ kind: 'input', prompt? }) while the task is `waiting`. A waiting
    // task keeps its attempt on its row (node, attempt id, token, lease) while its agent is parked
    // on that node; `troupe_tasks_waiting` finds those whose lease ran out for the sweeper (only a
    // waiting row version with an attempt has an entry: claims and settles of tasks that never
    // wait write none). No foreign key (as troupe_logs): the retention sweep removes a task's
    // inputs with it. Constant defaults: no row is rewritten.
    sql: `
      ALTER TABLE troupe_tasks ADD COLUMN waiting_for jsonb,
        ADD COLUMN inbox integer NOT NULL DEFAULT 0,
        ADD COLUMN delivered integer NOT NULL DEFAULT 0;
      CREATE TABLE troupe_inbox (
        task_id text NOT NULL,
        seq integer NOT NULL CHECK (seq > 0),
        message jsonb,
        idempotency_key text,
        at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (task_id, seq)
      );
      CREATE UNIQUE INDEX troupe_inbox_key ON troupe_inbox (task_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
      CREATE INDEX troupe_tasks_waiting ON troupe_tasks (lease_until) WHERE state = 'waiting' AND owner_node IS NOT NULL;`,
  },
  {
    version: 16,
    name: 'subtasks',
    // Subtasks (ctx.spawn, ctx.join; children.ts). `parent_id` names the task that spawned a
    // child (no foreign key, as troupe_logs: the retention sweep removes tasks one by one).
    // `troupe_tasks_children` lists a parent's children in id order (list({ parentId }), join's
    // checks, a cancel's cascade): only rows with a parent have an entry, so tasks without one
    // cost it nothing. `troupe_tasks_detached` finds the waiting tasks with no attempt (their
    // node closed or died while the agent waited) for the backstop that resumes a detached join
    // once its children have settled: only such row versions have an entry.
    sql: `
      ALTER TABLE troupe_tasks ADD COLUMN parent_id text;
      CREATE INDEX troupe_tasks_children ON troupe_tasks (parent_id, id) WHERE parent_id IS NOT NULL;
      CREATE INDEX troupe_tasks_detached ON troupe_tasks (id) WHERE state = 'waiting' AND owner_node IS NULL;`,
  },
  {
    version: 17,
    name: 'agent backoff',
    // An agent's fast-failure backoff for the whole cluster (backoff.ts): its policy (all three or
    // none), its consecutive fast failures, and the pause they started, on the database's clock.
    sql: `
      ALTER TABLE troupe_agents ADD COLUMN backoff_failures integer CHECK (backoff_failures > 0),
        ADD COLUMN backoff_fast_fail_ms bigint CHECK (backoff_fast_fail_ms > 0), ADD COLUMN backoff_pause_ms bigint CHECK (backoff_pause_ms > 0),
        ADD COLUMN fast_fails integer NOT NULL DEFAULT 0, ADD COLUMN paused_until timestamptz,
        ADD CHECK ((backoff_failures IS NULL) = (backoff_fast_fail_ms IS NULL) AND (backoff_failures IS NULL) = (backoff_pause_ms IS NULL));
      CREATE INDEX troupe_agents_paused ON troupe_agents (paused_until) WHERE paused_until IS NOT NULL;`,
  },
  {
    version: 18,
    name: 'capabilities',
    // Routing by `requires` (routing.ts). An agent's row keeps the capabilities of its registration
    // (NULL: none) and the attempt budget of its retry policy, for a task routed to it at submit
    // that gave none. A task keeps the `requires` it was submitted with (NULL: none), shown by get
    // and list and routed again by a retry of an unmatched task. No index: routing reads the few
    // rows of troupe_agents, and claims never look at `requires` (a routed task names its agent).
    sql: `
      ALTER TABLE troupe_agents ADD COLUMN capabilities text[], ADD COLUMN max_attempts integer CHECK (max_attempts > 0);
      ALTER TABLE troupe_tasks ADD COLUMN requires text[];`,
  },
  {
    version: 19,
    name: 'retention rules',
    // The LMDB runtime's retention rules beyond the runtime's ages (retention.ts). A task's own
    // `retention` (per settled state, ms after its settle; JSON null: for good) and an agent's
    // (`{ ageMs, count }` per state, null for a side that does not limit) on its troupe_agents row,
    // so a sweep on any runtime applies them. A task under its agent's or the runtime's rule for
    // the state it settled in has an entry in `troupe_tasks_retained` (agent, state, settle time,
    // id: the sweep reads each agent and state oldest first for ages, newest first for counts); a
    // task with a rule of its own for that state has one in `troupe_tasks_expiring`, keyed by its
    // expiry. Each settled row version has an entry in exactly one of them, beside its
    // troupe_tasks_settled entry (prune's): one more index write per settle, none for a claim or
    // requeue. `troupe_expiry` adds whole microseconds, which no time zone changes: immutable,
    // so it can key an index. The indexes are built in the migration's transaction.
    sql: `
      ALTER TABLE troupe_tasks ADD COLUMN retention jsonb CHECK (retention IS NULL OR jsonb_typeof(retention) = 'object');
      ALTER TABLE troupe_agents ADD COLUMN retention jsonb CHECK (retention IS NULL OR jsonb_typeof(retention) = 'object');
      CREATE FUNCTION troupe_expiry(settled_at timestamptz, state text, retention jsonb) RETURNS timestamptz
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$ SELECT CASE WHEN retention -> state = 'null'::jsonb THEN 'infinity'::timestamptz
                          ELSE settled_at + (retention ->> state)::float8 * interval '1 millisecond' END $$;
      CREATE INDEX troupe_tasks_retained ON troupe_tasks (agent, state, settled_at, id)
        WHERE state IN ('done', 'failed', 'dropped', 'cancelled') AND NOT coalesce(retention ? state, false);
      CREATE INDEX troupe_tasks_expiring ON troupe_tasks (troupe_expiry(settled_at, state, retention))
        WHERE state IN ('done', 'failed', 'dropped', 'cancelled') AND retention ? state;`,
  },
  {
    version: 20,
    name: 'progress',
    // The latest `ctx.progress` of a task's attempts (progress.ts): `{ value, message?, at }`, as
    // the LMDB runtime's record keeps it (at: the agent's clock, epoch ms). NULL: none reported in
    // this run. Not indexed, so its update can be a HOT one.
    sql: `ALTER TABLE troupe_tasks ADD COLUMN progress jsonb CHECK (progress IS NULL OR jsonb_typeof(progress) = 'object');`,
  },
  {
    version: 21,
    name: 'trace context',
    // The W3C trace context of a task's `troupe.submit` span (src/telemetry/tracing.ts), stored
    // at submit when tracing was on: `{ traceparent, tracestate? }`, as the LMDB runtime's record
    // keeps it. The node that claims an attempt reads it with the claim and parents the attempt's
    // `troupe.attempt` span on it. NULL: submitted untraced (or fired by a schedule). Written
    // once, by the insert; not indexed.
    sql: `ALTER TABLE troupe_tasks ADD COLUMN trace jsonb CHECK (trace IS NULL OR jsonb_typeof(trace) = 'object');`,
  },
  {
    version: 22,
    name: 'settled tasks hold their last attempt',
    // A settle that leaves a task done, failed, dropped or cancelled keeps that attempt on the
    // task's row, as the LMDB runtime's settled record does, instead of inserting it into a table
    // of its own: its id, node and start stay in `attempt_id`, `owner_node` and
    // `attempt_started_at`, its exit and error go to the new `attempt_exit` and `attempt_error`,
    // its end is the task's `settled_at`, and its token the task's less one (no write moves a
    // settled task's token). That was two of a settle's eight WAL records per task (a heap insert
    // and its primary key's entry). A retry of the task (tasks.ts retryTask) moves the attempt it
    // holds into the table before the new run. The table of the other ended attempts is now
    // `troupe_attempt_rows`; `troupe_attempts` is a view of both, one row per ended attempt as
    // before, for anyone who reads it. The columns are not indexed: a settle's update pays nothing
    // for them but their bytes.
    sql: `
      ALTER TABLE troupe_attempts RENAME TO troupe_attempt_rows;
      ALTER TABLE troupe_attempt_rows RENAME CONSTRAINT troupe_attempts_pkey TO troupe_attempt_rows_pkey;
      ALTER TABLE troupe_tasks ADD COLUMN attempt_exit text, ADD COLUMN attempt_error jsonb;
      CREATE VIEW troupe_attempts AS
        SELECT task_id, run, attempt, attempt_id, token, node, started_at, ended_at, exit, error FROM troupe_attempt_rows
        UNION ALL
        SELECT id, run, attempt_seq, attempt_id, token - 1, owner_node, attempt_started_at, settled_at, attempt_exit, attempt_error
          FROM troupe_tasks WHERE attempt_exit IS NOT NULL;`,
  },
  {
    version: 23,
    name: 'workspace',
    // The directory a task's agent works in (`ctx.workspace`), when its spec gave a path: an
    // absolute path, as the LMDB runtime's record keeps it, handed to every attempt of the task on
    // whichever node claims it (the path must mean the same there: a shared or a network disk, or
    // the same checkout on each machine). A workspace Troupe makes for the task (no path given) is
    // refused on this store: it would be a directory of one node. NULL: none. Not indexed.
    sql: `ALTER TABLE troupe_tasks ADD COLUMN workspace text CHECK (workspace IS NULL OR workspace <> '');`,
  },
];
