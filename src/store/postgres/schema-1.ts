/**
 * The PostgreSQL schema, versions 1 to 11 (migrations.ts runs them; schema-2.ts holds the later
 * ones). Append only: a released version never changes.
 */
import type { Migration } from './migrations.js';

/** Versions 1 to 11. */
export const MIGRATIONS_1: readonly Migration[] = [
  {
    version: 1,
    name: 'nodes',
    // The runtimes sharing the database. A live node holds a session advisory lock on its `lock`
    // number; a node whose lock another can take is dead, and its attempts are reclaimed.
    sql: `
      CREATE TABLE troupe_nodes (
        id uuid PRIMARY KEY,
        lock bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        host text NOT NULL,
        pid integer NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        seen_at timestamptz NOT NULL DEFAULT now()
      );`,
  },
  {
    version: 2,
    name: 'events',
    // The event log of the whole cluster. `seq` orders events of one transaction; `xid` (the
    // writer's transaction) orders transactions as readers may see them: see events.ts.
    sql: `
      CREATE TABLE troupe_events (
        seq bigserial PRIMARY KEY,
        xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        at timestamptz NOT NULL DEFAULT now(),
        type text NOT NULL,
        task_id text,
        attempt_id text,
        data jsonb
      );
      CREATE INDEX troupe_events_xid_seq ON troupe_events (xid, seq);`,
  },
  {
    version: 3,
    name: 'task queue',
    // The cluster's tasks and their attempts (queue.ts, settle.ts, sweeper.ts). `token` fences
    // every write of an attempt: a claim and every end of an attempt bump it. `queued_order` is
    // handed out each time a task enters `queued` (FIFO within a priority, lower priority first).
    // Times are the database's. `idempotency_key` stays unique for as long as the row exists.
    sql: `
      CREATE SEQUENCE troupe_queued_order;
      CREATE TABLE troupe_tasks (
        id text PRIMARY KEY,
        agent text NOT NULL,
        state text NOT NULL CHECK (state IN ('queued', 'running', 'waiting', 'sleeping', 'needs_attention', 'done', 'failed', 'dropped', 'cancelled')),
        priority integer NOT NULL DEFAULT 0,
        queued_order bigint NOT NULL DEFAULT nextval('troupe_queued_order'),
        run integer NOT NULL DEFAULT 1,
        attempts integer NOT NULL DEFAULT 0,
        attempt_seq integer NOT NULL DEFAULT 0,
        max_attempts integer NOT NULL CHECK (max_attempts > 0),
        token bigint NOT NULL DEFAULT 0,
        owner_node text,
        attempt_id text,
        lease_until timestamptz,
        run_at timestamptz NOT NULL DEFAULT now(),
        idempotency_key text UNIQUE,
        input jsonb,
        output jsonb,
        error jsonb,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        settled_at timestamptz,
        CHECK (state <> 'running' OR (owner_node IS NOT NULL AND attempt_id IS NOT NULL AND lease_until IS NOT NULL))
      );
      ALTER SEQUENCE troupe_queued_order OWNED BY troupe_tasks.queued_order;
      CREATE INDEX troupe_tasks_claim ON troupe_tasks (agent, priority, queued_order) WHERE state = 'queued';
      CREATE INDEX troupe_tasks_owner ON troupe_tasks (owner_node) WHERE state = 'running';
      CREATE INDEX troupe_tasks_lease ON troupe_tasks (lease_until) WHERE state = 'running';
      CREATE TABLE troupe_attempts (
        task_id text NOT NULL REFERENCES troupe_tasks (id) ON DELETE CASCADE,
        run integer NOT NULL,
        attempt integer NOT NULL,
        attempt_id text NOT NULL,
        token bigint NOT NULL,
        node text NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        ended_at timestamptz,
        exit text,
        error jsonb,
        PRIMARY KEY (task_id, run, attempt)
      );`,
  },
  {
    version: 4,
    name: 'cluster flow control',
    // What holds across all nodes besides the queue (limits.ts, control.ts, schedules.ts):
    // `troupe_agents` keeps each agent's limits and the state of its rate bucket and daily budget
    // (its row is locked by claims of a limited agent); running attempts are counted from
    // troupe_tasks, by the index below, not kept in a counter. `troupe_control` is the one row of
    // the cluster's freeze. `troupe_schedules` are cron schedules, fired by whichever node takes
    // the row. `queued_at` is when a task last entered `queued`, for `task.started`'s queuedMs.
    sql: `
      ALTER TABLE troupe_tasks ADD COLUMN queued_at timestamptz NOT NULL DEFAULT now();
      CREATE INDEX troupe_tasks_running_agent ON troupe_tasks (agent) WHERE state = 'running';
      CREATE TABLE troupe_agents (
        name text PRIMARY KEY,
        concurrency integer CHECK (concurrency > 0),
        rate_limit integer CHECK (rate_limit > 0),
        rate_window_ms bigint CHECK (rate_window_ms > 0),
        tokens double precision,
        refilled_at timestamptz,
        daily_limit integer CHECK (daily_limit > 0),
        daily_reset_at text,
        daily_tz text,
        day_start timestamptz,
        day_ends timestamptz,
        day_count integer NOT NULL DEFAULT 0 CHECK (day_count >= 0),
        updated_at timestamptz NOT NULL DEFAULT now(),
        CHECK ((rate_limit IS NULL) = (rate_window_ms IS NULL) AND (rate_limit IS NULL) = (tokens IS NULL) AND (rate_limit IS NULL) = (refilled_at IS NULL)),
        CHECK ((daily_limit IS NULL) = (daily_reset_at IS NULL) AND (daily_limit IS NULL) = (daily_tz IS NULL))
      );
      CREATE TABLE troupe_control (
        id integer PRIMARY KEY CHECK (id = 1),
        frozen boolean NOT NULL DEFAULT false,
        reason text,
        since timestamptz NOT NULL DEFAULT now()
      );
      INSERT INTO troupe_control (id) VALUES (1);
      CREATE TABLE troupe_schedules (
        id text PRIMARY KEY,
        cron text NOT NULL,
        tz text NOT NULL,
        task jsonb NOT NULL,
        overlap text NOT NULL CHECK (overlap IN ('skip', 'allow')),
        paused boolean NOT NULL DEFAULT false,
        next_run_at timestamptz NOT NULL,
        last_tick_at timestamptz,
        last_task_id text,
        fired bigint NOT NULL DEFAULT 0,
        skipped bigint NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX troupe_schedules_due ON troupe_schedules (next_run_at) WHERE NOT paused;`,
  },
  {
    version: 5,
    name: 'fewer index writes per task',
    // Each claim and each end of an attempt writes a new version of the task's row, and every index
    // that covers that version gets an entry (a task's state is in the partial indexes' predicates,
    // so these updates are never heap-only). Measured with npm run bench:cluster, these were most of
    // a claim's and a settle's writes:
    // - the idempotency key's unique index held an entry for every task, keyless ones too (NULLs
    //   are indexed): now only tasks with a key have one;
    // - running tasks had three partial indexes (by owner, by lease, by agent): the sweeper's scans
    //   by owner and by lease now read the running tasks through the one by agent (a few rows: the
    //   attempts in flight);
    // - the event log's seq had a unique index no reader uses (readers go by (xid, seq));
    // - an attempt row's foreign key to its task was checked (an index probe and a row lock) at
    //   every claim, for rows only the queue writes, with their task's id.
    sql: `
      ALTER TABLE troupe_attempts DROP CONSTRAINT troupe_attempts_task_id_fkey;
      ALTER TABLE troupe_tasks DROP CONSTRAINT troupe_tasks_idempotency_key_key;
      CREATE UNIQUE INDEX troupe_tasks_idempotency_key ON troupe_tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
      DROP INDEX troupe_tasks_owner;
      DROP INDEX troupe_tasks_lease;
      ALTER TABLE troupe_events DROP CONSTRAINT troupe_events_pkey;`,
  },
  {
    version: 6,
    name: 'event batches',
    // Each statement that appends events writes one row for all of them, not one row each (a claim
    // or a settle of 32 tasks: one heap tuple and one index entry instead of 32 of each). Every
    // event keeps its own `seq` from the same sequence, taken in log order, so a cursor is still
    // (xid, seq) and one taken before this version still resumes where it was. Within a
    // transaction a batch's seqs all come after the previous batch's (statements run one after the
    // other), so ordering batches by (xid, last_seq) orders their events by (xid, seq). `events`
    // is json (kept as written: nothing queries inside it) of [seq, type, task_id, attempt_id,
    // data] arrays in seq order; `n` is their count, for a reader's limit. The view
    // troupe_events shows one row per event, as the table of versions 2-5 did, for people and tests.
    sql: `
      CREATE TABLE troupe_event_batches (
        xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        last_seq bigint NOT NULL,
        n integer NOT NULL CHECK (n > 0),
        at timestamptz NOT NULL DEFAULT now(),
        events json NOT NULL
      );
      ALTER SEQUENCE troupe_events_seq_seq OWNED BY NONE;
      ALTER SEQUENCE troupe_events_seq_seq RENAME TO troupe_event_seq;
      INSERT INTO troupe_event_batches (xid, last_seq, n, at, events)
      SELECT xid, seq, 1, at, json_build_array(json_build_array(seq, type, task_id, attempt_id, data)) FROM troupe_events;
      DROP TABLE troupe_events;
      CREATE INDEX troupe_event_batches_xid_seq ON troupe_event_batches (xid, last_seq);
      CREATE VIEW troupe_events AS
        SELECT (e->>0)::bigint AS seq, b.xid, b.at, e->>1 AS type, e->>2 AS task_id, e->>3 AS attempt_id,
               CASE WHEN json_typeof(e->4) = 'null' THEN NULL ELSE (e->4)::jsonb END AS data
          FROM troupe_event_batches b, json_array_elements(b.events) e;`,
  },
  {
    version: 7,
    name: 'attempt rows written at their end',
    // An attempt's row is written once, when the attempt ends (a settle or a sweep), instead of
    // inserted at its claim and updated at its end: what it holds while it runs (node, attempt id,
    // token, run and number) is on the running task's row already, and `attempt_started_at` adds
    // when it started. troupe_attempts holds ended attempts only; its primary key refuses a second
    // end of one attempt. The attempts running now move onto their tasks.
    sql: `
      ALTER TABLE troupe_tasks ADD COLUMN attempt_started_at timestamptz;
      UPDATE troupe_tasks t SET attempt_started_at = coalesce(
          (SELECT a.started_at FROM troupe_attempts a WHERE a.task_id = t.id AND a.run = t.run AND a.attempt = t.attempt_seq), t.updated_at)
        WHERE t.state = 'running';
      DELETE FROM troupe_attempts WHERE ended_at IS NULL;
      ALTER TABLE troupe_tasks ADD CHECK (state <> 'running' OR attempt_started_at IS NOT NULL);
      ALTER TABLE troupe_attempts ALTER COLUMN ended_at SET NOT NULL, ALTER COLUMN exit SET NOT NULL;`,
  },
  {
    version: 8,
    name: 'labels and cancel requests',
    // What the runtime on PostgreSQL (src/cluster/runtime.ts) keeps beyond the queue: a task's
    // `labels` (the public Task's), and `cancel_reason`, set by rt.cancel(): on a running task it
    // asks the attempt's node to stop it (told by a NOTIFY on troupe_cancel, and by its lease
    // renewals), and an end of that attempt that would requeue the task cancels it instead (one
    // statement decides: settle.ts). A cancelled task keeps it as its reason; a retry clears it.
    // Both columns have constant defaults: adding them rewrites no row.
    sql: `
      ALTER TABLE troupe_tasks ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'::jsonb, ADD COLUMN cancel_reason text;`,
  },
  {
    version: 9,
    name: 'per-model limits and task results',
    // `troupe_agents.models`: an agent's per-model sub-limits of its concurrency ({ [model]: n },
    // a task's labels.model picking one), enforced by claims (limits.ts), which count the agent's
    // running attempts per model through troupe_tasks_running_agent (at most its concurrency: no
    // index of their own, which every claim and settle would pay for). `troupe_tasks.result`: the
    // settled task's `result` ({ kind, summary, branch, rev }) as the LMDB store keeps it. No
    // default to fill: no row is rewritten.
    sql: `
      ALTER TABLE troupe_agents ADD COLUMN models jsonb CHECK (models IS NULL OR jsonb_typeof(models) = 'object');
      ALTER TABLE troupe_tasks ADD COLUMN result jsonb;`,
  },
  {
    version: 10,
    name: 'log lines',
    // The lines agents write with ctx.log (logs.ts), keyed as the LMDB store keys them: one task's
    // lines are one range of the primary key, in the order they were written. `at` is the agent's
    // clock (epoch ms), as on LMDB. No foreign key to troupe_tasks: its check would run a trigger
    // per line on the hot path, and every insert already joins the task's row to fence the write
    // (the row exists); whatever removes a task removes this range of its lines in the same
    // statement (the retention sweep, retention.ts: version 11).
    sql: `
      CREATE TABLE troupe_logs (
        task_id text NOT NULL,
        run integer NOT NULL,
        attempt integer NOT NULL,
        seq integer NOT NULL,
        attempt_id text NOT NULL,
        level text NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
        message text NOT NULL,
        at float8 NOT NULL,
        fields jsonb,
        PRIMARY KEY (task_id, run, attempt, seq)
      );`,
  },
  {
    version: 11,
    name: 'retention',
    // What the retention sweep (retention.ts) reads and writes. `troupe_tasks_settled`: settled
    // tasks by state and settle time, so that a sweep reads the tasks past a state's age from one
    // end of an index range, not the whole table; only a settled row version has an entry (one
    // index write per settle: claims, requeues and retries write none). The event log needs no
    // index of its own: the sweep removes batches from its start, in the order of
    // troupe_event_batches_xid_seq. `events_removed_*` on the control row: how far the log was
    // removed (the cursor of the last batch removed, and the greatest seq removed), written with
    // the removal, so that a reader's cursor from before it is refused (CURSOR_EXPIRED).
    sql: `
      CREATE INDEX troupe_tasks_settled ON troupe_tasks (state, settled_at) WHERE state IN ('done', 'failed', 'dropped', 'cancelled');
      ALTER TABLE troupe_control ADD COLUMN events_removed_xid xid8 NOT NULL DEFAULT '0',
        ADD COLUMN events_removed_seq bigint NOT NULL DEFAULT 0,
        ADD COLUMN events_removed_max_seq bigint NOT NULL DEFAULT 0;`,
  },
];
