/**
 * What every view of the dashboard uses: the token, the API and its event streams, DOM helpers,
 * action buttons with their status line, and polling.
 */
export const STATES = ['queued', 'running', 'waiting', 'sleeping', 'needs_attention', 'done', 'failed', 'dropped', 'cancelled'];
export const TERMINAL = new Set(['done', 'failed', 'dropped', 'cancelled']);
export const RETRYABLE = new Set(['failed', 'dropped', 'cancelled']);
export const POLL_MS = 1000;
export const PAGE_SIZE = 50;
export const TOKEN_KEY = 'troupe.token';

export const token = takeToken();
/** The server's clock at the last answer (its Date header, to the second). */
let serverNow = 0;
/** The server's clock as of the last answer (0 before any). */
export const serverTime = () => serverNow;

/** The token from `#token=` or `?token=`, kept for the tab's session and taken out of the address bar. */
export function takeToken() {
  const inHash = /(?:^#|[&?])token=([^&]*)/.exec(location.hash);
  const given = inHash ? decodeURIComponent(inHash[1]) : new URLSearchParams(location.search).get('token');
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    history.replaceState(null, '', location.pathname + (inHash ? '#/' : location.hash || '#/'));
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the API with the token; an error answer throws an ApiError with the server's message. */
export async function api(path, body) {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const init = body === undefined ? { headers } : { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(body) };
  const res = await fetch(path, init);
  const date = Date.parse(res.headers.get('date') ?? '');
  if (Number.isFinite(date)) serverNow = date;
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) banner('Not authorized: this dashboard needs its token. Open it with the link the runtime printed (it ends in #token=…).');
  if (!res.ok) throw new ApiError(res.status, data.error?.code ?? `HTTP_${res.status}`, data.error?.message ?? res.statusText);
  return data;
}

/** An EventSource on `path` (the token goes in the query: EventSource cannot set headers). */
export function stream(scope, path, params, onData, handlers = {}) {
  const url = new URL(path, location.href);
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  if (token) url.searchParams.set('token', token);
  const source = new EventSource(url);
  source.onmessage = (e) => onData(JSON.parse(e.data));
  // The server ends a stream it cannot go on with (an expired cursor): reconnecting would only
  // fail again, so it stays closed and says why.
  source.addEventListener('failure', (e) => {
    source.close();
    const { code, message } = JSON.parse(e.data);
    banner(`The live stream stopped: ${code}: ${message}. Reload the page to start again.`, 'stream');
  });
  for (const [name, fn] of Object.entries(handlers)) source.addEventListener(name, fn);
  scope.add(() => source.close());
  return source;
}

export function banner(text, kind = 'unauthorized') {
  const el = document.getElementById('banner');
  el.textContent = text;
  el.dataset.error = kind;
  el.hidden = false;
}

/** Makes an element: attributes (`on*` are listeners), then children (strings become text). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) if (child !== undefined && child !== null && child !== false) el.append(child instanceof Node ? child : String(child));
  return el;
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  el.append(...children);
  return el;
}

export const json = (value) => (value === undefined ? '' : JSON.stringify(value, null, 2));
export const time = (ms) => (ms ? new Date(ms).toLocaleString() : '—');
export const taskLink = (id) => h('a', { href: `#/tasks/${encodeURIComponent(id)}`, class: 'mono' }, id);
export const stateBadge = (state) => h('span', { class: 'state', 'data-state': state }, state);
export const timeout = (ms) => (ms ? `${ms} ms` : 'none');
export const counts = (byState) => Object.entries(byState ?? {}).map(([s, n]) => `${s} ${n}`).join(', ') || '—';

/** How long from now (server time), roughly: "in 5 s", "3 min ago". */
export function relative(ms) {
  if (!ms) return '—';
  const d = ms - (serverNow || Date.now());
  const a = Math.abs(d);
  const text = a < 60_000 ? `${Math.round(a / 1000)} s` : a < 3_600_000 ? `${Math.round(a / 60_000)} min` : `${Math.round(a / 3_600_000)} h`;
  return d >= 0 ? `in ${text}` : `${text} ago`;
}

/** A status line: what the last action did, or its error. */
export function statusLine() {
  const el = h('p', { class: 'status', role: 'status', 'data-status': '' });
  el.show = (text, error = false) => {
    el.textContent = text;
    el.classList.toggle('error', error);
  };
  return el;
}

/** A button that runs `action`, then says `done` (or the error) in `status`. */
export function actionButton(label, status, done, action, primary = false) {
  const button = h('button', {
    type: 'button',
    class: primary ? 'primary' : undefined,
    onclick: async () => {
      button.disabled = true;
      status.show(`${label}…`);
      try {
        await action();
        status.show(done);
      } catch (error) {
        status.show(`${label} failed: ${error.message}`, true);
      } finally {
        button.disabled = false;
      }
    },
  }, label);
  return button;
}

/** Runs `fn` once at a time: calls during a run make one more run after it. */
export function coalesce(fn) {
  let running = false;
  let again = false;
  return async () => {
    if (running) return void (again = true);
    running = true;
    try {
      do {
        again = false;
        await fn();
      } while (again);
    } finally {
      running = false;
    }
  };
}

/** Runs `fn` now and every POLL_MS after it finishes, while the view is shown; resolves to a refresh once `fn` ran. */
export async function poll(scope, fn) {
  let timer;
  const run = coalesce(() => fn().catch((error) => console.warn(error)));
  const loop = async () => {
    await run();
    if (scope.alive) timer = setTimeout(loop, POLL_MS);
  };
  scope.add(() => clearTimeout(timer));
  await loop();
  return run;
}

export function table(headers, rows) {
  return h('table', {}, h('thead', {}, h('tr', {}, headers.map((t) => h('th', {}, t)))), h('tbody', {}, rows));
}

// ---- Views ---------------------------------------------------------------------------------
