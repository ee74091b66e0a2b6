/**
 * The Troupe dashboard: hash-routed views over the JSON API and its event streams (the API is
 * described in src/dashboard/api.ts). Plain DOM, no framework and no build step; the server's CSP
 * allows nothing inline, so every handler is attached here.
 *
 * Live updates: the task list follows `/api/changes` (which tasks changed, every 250 ms at most),
 * a task's page follows `/api/events?taskId=` (Server-Sent Events, which reconnect by themselves and
 * resume from Last-Event-ID); the other views read their JSON again every second.
 */
import { PAGE_SIZE, RETRYABLE, STATES, TERMINAL, actionButton, api, coalesce, counts, h, json, poll, relative, serverTime, stateBadge, statusLine, stream, svg, table, taskLink, time, timeout } from './lib.js';

async function overviewView(view, scope) {
  const status = statusLine();
  const reason = h('input', { placeholder: 'reason (optional)', 'aria-label': 'Freeze reason' });
  const actions = h('div', { class: 'actions' });
  const body = h('div');
  view.append(h('h1', {}, 'Overview'), actions, status, body);
  let frozen;
  const refresh = await poll(scope, async () => {
    const { stats, agents, chart, store } = await api('/api/overview');
    // On PostgreSQL the runtime is one of a cluster: tasks and queues are the cluster's, slots and
    // the chart this runtime's own.
    const cluster = store === 'postgres';
    if (stats.frozen !== frozen) {
      frozen = stats.frozen;
      actions.replaceChildren(...(frozen
        ? [actionButton('Unfreeze', status, 'Unfrozen', () => api('/api/unfreeze', {}).then(refresh))]
        : [reason, actionButton('Freeze', status, 'Frozen', () => api('/api/freeze', { reason: reason.value }).then(refresh))]));
    }
    const registered = new Map(agents.map((a) => [a.name, a]));
    const paused = Object.entries(stats.agents).filter(([, a]) => a.paused || a.flow?.pausedUntil);
    const limited = agents.filter((a) => a.rate || a.dailyLimit);
    body.replaceChildren(
      h('div', { class: 'cards' },
        h('div', { class: 'card', 'data-store': store }, h('b', {}, stats.state), h('span', {}, cluster ? 'this runtime, on PostgreSQL' : 'runtime')),
        h('div', { class: 'card' }, h('b', {}, `${stats.slots.busy} / ${stats.slots.total}`), h('span', {}, `slots busy${cluster ? ' on this runtime' : ''} (${stats.slots.free} free)`)),
        h('div', { class: 'card' }, h('b', {}, stats.queued), h('span', {}, `waiting for a slot${cluster ? ' in the cluster' : ''} (${stats.delayed} delayed)`)),
        STATES.map((s) => h('div', { class: 'card', 'data-count': s }, h('b', {}, stats.tasks[s] ?? 0), h('span', {}, h('a', { href: `#/tasks?state=${s}` }, s))))),
      h('h2', {}, cluster ? "This runtime's attempts started, done and failed per " : 'Started, done and failed per ', chart.bucketMs / 1000, ' s'),
      chartSvg(chart),
      h('h2', {}, 'Holds'),
      h('ul', {},
        h('li', { 'data-hold': 'frozen' }, stats.freeze ? `Frozen since ${time(stats.freeze.since)}${stats.freeze.reason ? `: ${stats.freeze.reason}` : ''}${stats.freeze.killed ? ' (killed)' : ''}` : 'Not frozen'),
        h('li', {}, paused.length ? `Paused agents: ${paused.map(([n, a]) => `${n}${a.flow?.pausedUntil ? ` (until ${time(a.flow.pausedUntil)})` : ''}`).join(', ')}` : 'No agent paused'),
        limited.length === 0 ? h('li', {}, 'No rate or daily limits') : limited.map((a) => h('li', {}, `${a.name}: ${limitText(a, stats.agents[a.name]?.flow)}`)),
        stats.storeFailure ? h('li', { class: 'status error' }, `Store stopped: ${stats.storeFailure.message} (${stats.storeFailure.retries} retries)`) : null),
      h('h2', {}, cluster ? 'Queues in the cluster' : 'Queues'),
      // The cluster's limits hold across its runtimes, which reserve no slots of each other's: what runs is shown instead.
      table(['Agent', 'Queued', cluster ? 'Running' : 'Reserved', 'Limit', 'Held', 'Tasks'], Object.entries(stats.agents).map(([name, a]) =>
        h('tr', { 'data-queue': name }, h('td', {}, name, registered.has(name) ? '' : cluster ? ' (not on this runtime)' : ' (unregistered)'), h('td', {}, a.queued), h('td', {}, cluster ? a.tasks?.running ?? 0 : a.reserved), h('td', {}, cluster && !registered.has(name) ? '—' : a.limit ?? '∞'),
          h('td', {}, a.paused ? 'yes' : 'no'), h('td', {}, counts(a.tasks))))),
    );
  });
}

function limitText(agent, flow) {
  const parts = [];
  if (agent.rate) parts.push(`rate ${agent.rate.limit} per ${agent.rate.windowMs / 1000} s${flow?.tokens != null ? ` (${Math.floor(flow.tokens)} left)` : ''}`);
  if (agent.dailyLimit) parts.push(`daily ${flow?.today ? `${flow.today.count} / ` : ''}${agent.dailyLimit.limit}`);
  return parts.join(', ');
}

/** Bars of started / done / failed per bucket, over the chart's window. */
function chartSvg({ bucketMs, buckets }) {
  const slots = 60;
  const width = 720;
  const height = 120;
  const end = Math.max(serverTime(), buckets.at(-1)?.at ?? 0);
  const first = end - (end % bucketMs) - (slots - 1) * bucketMs;
  const max = Math.max(1, ...buckets.flatMap((b) => [b.started, b.done, b.failed]));
  const step = width / slots;
  const bars = [];
  for (const b of buckets) {
    const i = Math.round((b.at - first) / bucketMs);
    if (i < 0 || i >= slots) continue;
    ['started', 'done', 'failed'].forEach((kind, k) => {
      const barHeight = ((height - 14) * b[kind]) / max;
      bars.push(svg('rect', { class: kind, x: i * step + k * (step / 3), y: height - barHeight, width: step / 3 - 0.5, height: barHeight },
        svg('title', {}, `${new Date(b.at).toLocaleTimeString()}: ${b.started} started, ${b.done} done, ${b.failed} failed`)));
    });
  }
  // Latency: the mean wait from submit to start of each bucket's starts, as a line on its own scale.
  const waits = buckets.filter((b) => b.queuedMs !== null && b.queuedMs !== undefined);
  const maxWait = Math.max(1, ...waits.map((b) => b.queuedMs));
  const points = waits.map((b) => `${((b.at - first) / bucketMs) * step + step / 2},${height - ((height - 14) * b.queuedMs) / maxWait}`).join(' ');
  const line = waits.length > 0 ? [svg('polyline', { class: 'wait', points, fill: 'none' })] : [];
  return h('div', {},
    svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, width: '100%', height, preserveAspectRatio: 'none', role: 'img', 'aria-label': 'tasks and wait per bucket' },
      svg('text', { x: 4, y: 11, 'font-size': 10, fill: '#667085' }, `max ${max} tasks, ${Math.round(maxWait)} ms wait`), ...bars, ...line),
    h('div', { class: 'legend muted' }, ['started', 'done', 'failed', 'wait'].map((k) => h('span', {}, h('i', { class: k }), k === 'wait' ? 'submit → start (mean ms)' : k)), h('span', {}, `per ${bucketMs / 1000} s, last ${(slots * bucketMs) / 60_000} min`)));
}

async function tasksView(view, scope, params) {
  const filter = Object.fromEntries(['state', 'agent', 'label', 'q'].map((k) => [k, params.get(k) ?? '']));
  const after = params.get('after') ?? '';
  const form = h('form', { class: 'filters' },
    h('select', { name: 'state', 'aria-label': 'State' }, h('option', { value: '' }, 'any state'), STATES.map((s) => h('option', { value: s, selected: s === filter.state }, s))),
    h('input', { name: 'agent', placeholder: 'agent', value: filter.agent, 'aria-label': 'Agent' }),
    h('input', { name: 'label', placeholder: 'label NAME=VALUE', value: filter.label, 'aria-label': 'Label' }),
    h('input', { name: 'q', placeholder: 'search', value: filter.q, 'aria-label': 'Search' }),
    h('button', { type: 'submit' }, 'Filter'),
    h('a', { href: '#/tasks' }, 'Clear'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const query = new URLSearchParams([...new FormData(form)].filter(([, v]) => v !== ''));
    location.hash = `#/tasks?${query}`;
  });
  const tbody = h('tbody');
  const pager = h('div', { class: 'actions' });
  view.append(h('h1', {}, 'Tasks'), form,
    h('table', {}, h('thead', {}, h('tr', {}, ['Task', 'Agent', 'State', 'Labels', 'Progress', 'Runs', 'Created', 'Updated'].map((t) => h('th', {}, t)))), tbody), pager);

  const rows = new Map();
  // Refreshes of shown rows by id, and the ids shown on top since the page was read (oldest id
  // first): the newest page of them stays, so a page left open does not grow without end.
  const refreshers = new Map();
  const prepended = [];
  const row = (t) => h('tr', { 'data-task-id': t.id, 'data-state': t.state },
    h('td', {}, taskLink(t.id)), h('td', {}, t.agent), h('td', {}, stateBadge(t.state)),
    h('td', { class: 'mono' }, Object.entries(t.labels).map(([k, v]) => `${k}=${v}`).join(' ')),
    h('td', {}, t.progress ? `${Math.round(t.progress.value * 100)}%` : ''), h('td', {}, t.runs),
    h('td', {}, time(t.createdAt)), h('td', {}, time(t.updatedAt)));
  const show = (t, top = false) => {
    const old = rows.get(t.id);
    // On top stay the newest tasks (ids sort by creation): one older than all of a full top, that
    // fell off it or whose answer came after newer ones', is not shown again on its next change.
    if (!old && top && prepended.length >= PAGE_SIZE && t.id < prepended[0]) return;
    const el = row(t);
    if (old) old.replaceWith(el);
    else if (top) tbody.prepend(el);
    else tbody.append(el);
    rows.set(t.id, el);
    if (old || !top) return;
    let at = prepended.length;
    while (at > 0 && prepended[at - 1] > t.id) at--;
    prepended.splice(at, 0, t.id);
    if (prepended.length <= PAGE_SIZE) return;
    const dropped = prepended.shift();
    rows.get(dropped)?.remove();
    rows.delete(dropped);
    refreshers.delete(dropped);
  };
  const empty = () => h('tr', { class: 'empty' }, h('td', { colspan: 8, class: 'muted' }, 'No tasks'));

  const query = new URLSearchParams([...Object.entries(filter).filter(([, v]) => v !== ''), ['limit', String(PAGE_SIZE)], ...(after ? [['after', after]] : [])]);
  let page;
  try {
    page = await api(`/api/tasks?${query}`);
  } catch (error) {
    return void view.append(h('p', { class: 'status error' }, error.message));
  }
  if (!scope.alive) return;
  for (const t of page.tasks) show(t);
  if (page.tasks.length === 0) tbody.append(empty());
  if (after) pager.append(h('a', { href: '#/tasks' + (filter.state || filter.agent || filter.label || filter.q ? `?${new URLSearchParams(Object.entries(filter).filter(([, v]) => v))}` : '') }, 'First page'));
  if (page.next) pager.append(h('button', { type: 'button', onclick: () => (location.hash = `#/tasks?${new URLSearchParams([...query].filter(([k]) => k !== 'limit' && k !== 'after').concat([['after', page.next]]))}`) }, 'Next page'));

  // The changes feed names, every 250 ms at most, the tasks whose state changed: a shown row is
  // redrawn from the task itself; on the first unfiltered page, tasks not shown yet go on top.
  const growing = !after && !Object.values(filter).some(Boolean);
  const refresh = (id) => {
    let run = refreshers.get(id);
    if (!run) {
      run = coalesce(async () => {
        const { task } = await api(`/api/tasks/${encodeURIComponent(id)}`).catch(() => ({}));
        if (task && scope.alive) {
          tbody.querySelector('tr.empty')?.remove();
          show(task, !rows.has(id));
        }
      });
      refreshers.set(id, run);
    }
    void run();
  };
  // The page read again, in one request, and drawn anew (rows shown on top since go).
  const reload = coalesce(async () => {
    const again = await api(`/api/tasks?${query}`).catch(() => null);
    if (!again || !scope.alive) return;
    rows.clear();
    refreshers.clear();
    prepended.length = 0;
    tbody.replaceChildren();
    for (const t of again.tasks) show(t);
    if (again.tasks.length === 0) tbody.append(empty());
  });
  const feed = stream(scope, '/api/changes', {}, (change) => {
    // Too many at once to name: read the page again.
    if (change.overflow) return void reload();
    for (const id of Object.keys(change.tasks)) if (rows.has(id) || growing) refresh(id);
  });
  // Read the page again once the feed is open (it opened after the list was read: what changed
  // in between), and after each reconnect (the feed has no cursor).
  feed.addEventListener('open', () => void reload());
}

async function taskView(view, scope, id) {
  let first;
  try {
    first = await api(`/api/tasks/${encodeURIComponent(id)}`);
  } catch (error) {
    const missing = error.status === 404;
    return void view.replaceChildren(h('div', { class: 'error-page', 'data-error': missing ? 'not-found' : 'failed' },
      h('h1', {}, missing ? 'Task not found' : 'Could not load the task'),
      h('p', {}, missing ? 'There is no task ' : 'Task ', h('code', { class: 'mono' }, id), missing ? ' in this runtime (it may have been pruned).' : `: ${error.message}`),
      h('p', {}, h('a', { href: '#/tasks' }, 'All tasks'))));
  }
  if (!scope.alive) return;
  const state = h('span', { class: 'state', 'data-task-id': id, 'data-state': first.task.state }, first.task.state);
  const status = statusLine();
  const actions = h('div', { class: 'actions' });
  const waiting = h('div');
  const details = h('div');
  const runs = h('tbody');
  const events = h('tbody');
  const log = h('pre', { class: 'log mono', 'data-log': '' });
  view.append(h('h1', {}, 'Task ', h('span', { class: 'mono' }, id), ' ', state), actions, status, waiting, details,
    h('h2', {}, 'Runs and attempts'), h('table', {}, h('thead', {}, h('tr', {}, ['Run', 'Attempt', 'Queued', 'Started', 'Ended', 'Exit', 'Ran'].map((t) => h('th', {}, t)))), runs),
    h('h2', {}, 'Log'), log,
    h('h2', {}, 'Events'), h('table', {}, h('thead', {}, h('tr', {}, ['At', 'Event', 'Data'].map((t) => h('th', {}, t)))), events));

  let shownActions = '';
  let shownWaiting = '';
  const render = ({ task: t, parent, children }) => {
    state.dataset.state = t.state;
    state.textContent = t.state;
    const can = `${TERMINAL.has(t.state) ? '' : 'c'}${RETRYABLE.has(t.state) ? 'r' : ''}`;
    if (can !== shownActions) {
      shownActions = can;
      actions.replaceChildren(
        can.includes('c') ? actionButton('Cancel', status, 'Cancelled', () => api(`/api/tasks/${encodeURIComponent(id)}/cancel`, {}).then(refresh)) : '',
        can.includes('r') ? actionButton('Retry', status, 'Retried', () => api(`/api/tasks/${encodeURIComponent(id)}/retry`, {}).then(refresh), true) : '');
    }
    const asks = t.state === 'waiting' && t.waitingFor?.kind === 'input' ? `${t.runs}:${json(t.waitingFor.prompt)}` : '';
    if (asks !== shownWaiting) {
      shownWaiting = asks;
      waiting.replaceChildren(asks ? waitingBox(t, status, refresh) : '');
    }
    details.replaceChildren(h('div', { class: 'grid2' },
      h('div', {}, h('h2', {}, 'Spec'), h('dl', { class: 'spec' },
        ...[['Agent', t.agent], ['Priority', t.priority], ['Lane', t.lane], ['Instance', t.instanceKey],
          ['Labels', Object.entries(t.labels).map(([k, v]) => `${k}=${v}`).join(' ') || '—'], ['Retry', `${t.retry.maxAttempts} attempts`],
          ['Timeout', timeout(t.timeoutMs)], ['Runs', `${t.runs} (attempt ${t.attempts})`], ['Progress', t.progress ? `${Math.round(t.progress.value * 100)}%${t.progress.message ? ` ${t.progress.message}` : ''}` : '—'],
          ['Created', time(t.createdAt)], ['Started', time(t.startedAt)], ['Settled', time(t.settledAt)], ['Held by', t.heldBy ? json(t.heldBy) : '—'],
          ['Parent', parent ? taskLink(parent.id) : t.parentId ? h('span', { class: 'mono' }, t.parentId) : '—'],
          ['Children', children.length ? children.map((c) => h('span', {}, taskLink(c.id), ' ', stateBadge(c.state), ' ')) : '—']]
          .flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]))),
      h('div', {}, h('h2', {}, 'Input'), h('pre', { 'data-input': '' }, json(t.input)),
        t.output !== undefined ? [h('h2', {}, 'Output'), h('pre', { 'data-output': '' }, json(t.output))] : '',
        t.error ? [h('h2', {}, 'Error'), h('pre', { class: 'status error', 'data-task-error': '' }, `${t.error.code ?? ''} ${t.error.message ?? ''}`.trim())] : '',
        t.reason ? h('p', {}, 'Reason: ', t.reason) : '')));
  };
  const refresh = coalesce(async () => {
    const next = await api(`/api/tasks/${encodeURIComponent(id)}`).catch((error) => void status.show(error.message, true));
    if (next && scope.alive) render(next);
  });
  render(first);

  const attempts = new Map();
  stream(scope, '/api/events', { taskId: id }, (event) => {
    const d = event.data;
    events.append(h('tr', {}, h('td', {}, time(event.at)), h('td', {}, event.type), h('td', { class: 'mono' }, JSON.stringify(d))));
    if (event.type === 'task.started') {
      const tr = h('tr', {}, h('td', {}, d.run), h('td', {}, d.attempt), h('td', {}, `${d.queuedMs} ms`), h('td', {}, time(event.at)), h('td', {}, '—'), h('td', {}, 'running'), h('td', {}, ''));
      attempts.set(`${d.run}.${d.attempt}`, tr);
      runs.append(tr);
    } else if (d.exit !== undefined && attempts.has(`${d.run}.${d.attempt}`)) {
      const cells = attempts.get(`${d.run}.${d.attempt}`).children;
      cells[4].textContent = time(event.at);
      cells[5].textContent = `${d.exit} (${event.type.slice(5)})`;
      cells[6].textContent = `${d.attemptMs} ms`;
    }
    void refresh();
  });
  const logs = stream(scope, `/api/tasks/${encodeURIComponent(id)}/logs`, {}, (line) => {
    // The task and attempt ids are on the page already; the other fields are the agent's own.
    const { message, level, at, cursor, taskId, attemptId, ...rest } = line;
    log.append(h('span', { class: level }, `${new Date(at).toLocaleTimeString()} ${level} ${message}${Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : ''}\n`));
  }, {
    // The stream restarts from the first line when it reconnects.
    open: () => log.replaceChildren(),
    end: () => logs.close(),
    failure: (e) => {
      logs.close();
      log.append(h('span', { class: 'error' }, `log stream failed: ${JSON.parse(e.data).message}\n`));
    },
  });
}

function waitingBox(task, status, refresh) {
  const field = h('input', { name: 'message', placeholder: 'your answer', 'aria-label': 'Answer', autocomplete: 'off' });
  const send = actionButton('Send', status, 'Sent', async () => {
    await api(`/api/tasks/${encodeURIComponent(task.id)}/input`, { message: field.value });
    field.value = '';
    await refresh();
  }, true);
  const form = h('form', {}, field, send);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    send.click();
  });
  const prompt = task.waitingFor.prompt;
  return h('div', { class: 'waiting', 'data-waiting': 'input' },
    h('strong', {}, 'Waiting for input'), h('div', { 'data-prompt': '' }, prompt === undefined ? '(no prompt)' : typeof prompt === 'string' ? prompt : json(prompt)), form);
}

async function instancesView(view, scope) {
  const body = h('div');
  view.append(h('h1', {}, 'Instances'), body);
  await poll(scope, async () => {
    const list = await api('/api/instances');
    // A runtime on PostgreSQL has none: the overview says which store it is on.
    const store = list.length === 0 ? (await api('/api/overview')).store : undefined;
    body.replaceChildren(list.length === 0 ? h('p', { class: 'muted', 'data-instances': 'none' }, store === 'postgres' ? 'No instances: tasks on PostgreSQL run without execution instances' : 'No instances') :
      table(['Key', 'Agent', 'Lane', 'Status', 'In memory', 'Pending', 'Running', 'Stopping', 'Target', 'Failures'], list.map((i) =>
        h('tr', { 'data-instance': i.key }, h('td', { class: 'mono' }, i.key), h('td', {}, i.agent), h('td', {}, i.lane), h('td', {}, i.status), h('td', {}, i.live ? 'yes' : 'no'),
          h('td', {}, i.pending), h('td', {}, i.running), h('td', {}, i.stopping), h('td', {}, i.target ?? '—'),
          h('td', {}, i.consecutiveFailures, i.recentFailures.length ? h('div', { class: 'muted' }, i.recentFailures.join('; ')) : '')))));
  });
}

async function agentsView(view, scope) {
  const status = statusLine();
  const body = h('div');
  view.append(h('h1', {}, 'Agents'), status, body);
  const refresh = await poll(scope, async () => {
    const { agents, stats, store } = await api('/api/agents');
    body.replaceChildren(table(['Agent', 'Limits', 'Capabilities', 'Flow', 'Queue', 'Tasks', ''], agents.map((a) => {
      const s = stats[a.name];
      const pausedUntil = s?.flow?.pausedUntil;
      return h('tr', { 'data-agent': a.name },
        h('td', {}, h('strong', {}, a.name), h('div', { class: 'muted mono' }, a.module.replace(/^.*\//, ''))),
        h('td', {}, `concurrency ${a.concurrency ?? '∞'}`, Object.entries(a.models).map(([m, n]) => h('div', {}, `${m}: ${n}`)), limitText(a, s?.flow) ? h('div', {}, limitText(a, s?.flow)) : '',
          h('div', { class: 'muted' }, `timeout ${timeout(a.timeoutMs)}, ${a.retry.maxAttempts} attempts`)),
        h('td', {}, a.capabilities.join(', ') || '—'),
        h('td', {}, s?.paused ? 'held' : 'free', pausedUntil ? h('div', {}, `paused until ${time(pausedUntil)}`) : '', s?.flow?.fastFails ? h('div', {}, `${s.flow.fastFails} fast failures`) : ''),
        h('td', {}, store === 'postgres' ? `${s?.queued ?? 0} queued, ${s?.tasks?.running ?? 0} running in the cluster` : `${s?.queued ?? 0} queued, ${s?.reserved ?? 0} reserved`),
        h('td', {}, counts(s?.tasks)),
        h('td', {}, pausedUntil ? actionButton('Resume', status, `Resumed ${a.name}`, () => api(`/api/agents/${encodeURIComponent(a.name)}/resume`, {}).then(refresh)) : ''));
    })));
  });
}

async function schedulesView(view, scope) {
  const status = statusLine();
  const body = h('div');
  view.append(h('h1', {}, 'Schedules'), status, body);
  const refresh = await poll(scope, async () => {
    const list = await api('/api/schedules');
    const act = (s, verb, done) => actionButton(verb, status, `${done} ${s.id}`, () => api(`/api/schedules/${encodeURIComponent(s.id)}/${verb.toLowerCase()}`, {}).then(refresh));
    body.replaceChildren(list.length === 0 ? h('p', { class: 'muted' }, 'No schedules') :
      table(['Schedule', 'Cron', 'Task', 'Next tick', 'Last tick', 'Fired / skipped', ''], list.map((s) =>
        h('tr', { 'data-schedule': s.id, 'data-paused': String(s.paused) },
          h('td', { class: 'mono' }, s.id), h('td', { class: 'mono' }, `${s.cron} (${s.tz})`), h('td', {}, s.task.agent ?? json(s.task.requires)),
          h('td', {}, s.paused ? 'paused' : `${time(s.nextRunAt)} (${relative(s.nextRunAt)})`),
          h('td', {}, s.lastTickAt ? [`${time(s.lastTickAt)} `, s.lastTaskId ? taskLink(s.lastTaskId) : ''] : '—'),
          h('td', {}, `${s.fired} / ${s.skipped}`),
          h('td', {}, s.paused ? act(s, 'Resume', 'Resumed') : act(s, 'Pause', 'Paused'))))));
  });
}

// ---- Routing -------------------------------------------------------------------------------

let current;

function route() {
  current?.dispose();
  const fns = [];
  const scope = { alive: true, add: (fn) => fns.push(fn), dispose() { this.alive = false; for (const fn of fns.splice(0)) fn(); } };
  current = scope;
  const [path, query = ''] = location.hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.getAttribute('href') === `#/${parts[0] ?? ''}`);
  const view = document.getElementById('view');
  view.replaceChildren();
  const params = new URLSearchParams(query);
  const shown =
    parts.length === 0 ? overviewView(view, scope)
    : parts[0] === 'tasks' && parts.length === 1 ? tasksView(view, scope, params)
    : parts[0] === 'tasks' ? taskView(view, scope, parts.slice(1).join('/'))
    : parts[0] === 'instances' ? instancesView(view, scope)
    : parts[0] === 'agents' ? agentsView(view, scope)
    : parts[0] === 'schedules' ? schedulesView(view, scope)
    : Promise.resolve(view.append(h('p', { 'data-error': 'no-view' }, 'No such view. ', h('a', { href: '#/' }, 'Overview'))));
  const name = parts[0] === 'tasks' && parts.length > 1 ? 'task' : parts[0] ?? 'overview';
  document.title = `Troupe · ${name}`;
  // data-ready: the view has loaded its first data (a hook for tests and scripts).
  view.dataset.view = name;
  delete view.dataset.ready;
  shown.then(
    () => void (scope.alive && (view.dataset.ready = '')),
    (error) => view.append(h('p', { class: 'status error' }, error.message)),
  );
}

addEventListener('hashchange', route);
route();
