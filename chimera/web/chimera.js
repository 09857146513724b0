// chimera.js — the browser client for a Chimera server. An ES module, no dependencies,
// no build step: `import { followJob } from "http://HOST:8888/static/chimera.js"`.
//
// followJob(jobId, options) follows one job: it loads the job's snapshot, opens
// /ws/orchestrate/{jobId} (resuming with ?since=<last seq>&epoch=<its epoch>), pings
// every 30 s, and when the WebSocket drops it polls GET /api/jobs/{jobId} every 1.5 s
// while it reconnects (5 attempts 2 s apart, then every 5 s in the background). Events
// and snapshots are folded into one model, keyed by seq and by thought id, so each
// thought is there exactly once whatever path it took. A position is {seq, epoch}: the
// epoch (from `connected` or the snapshot) names the server store's lifetime, so after
// the server lost its data a resume is refused (4410) instead of splicing another job's
// events under the same id. See docs/browser.md ("chimera.js") for the API.

export const RECONNECT_ATTEMPTS = 5;
export const RECONNECT_DELAY_MS = 2000;
export const BACKGROUND_RETRY_MS = 5000;
export const POLL_INTERVAL_MS = 1500;
export const PING_INTERVAL_MS = 30000;
export const BEARER_PROTOCOL = "chimera.bearer";

export const TEAMS = ["anthropic", "google"];
const JOB_FINAL = new Set(["succeeded", "failed", "cancelled"]);
const CLOSE_TOO_SLOW = 4008;
const CLOSE_HISTORY_GONE = 4410;
const CLOSE_SINCE_TOO_LARGE = 4416;
const CLOSE_TOKEN_EXPIRED = 4401;

/** An HTTP answer that is not 2xx: `status` and the server's `message`. */
export class ChimeraHttpError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ChimeraHttpError";
    this.status = status;
  }
  /** True for a missing, expired or refused token (401) or a forbidden one (403). */
  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

/** The backend's base URL (default: the page's origin), without a trailing slash. */
export function backendUrl(baseUrl) {
  const base = baseUrl || globalThis.location?.origin;
  if (!base) throw new Error("chimera.js: give baseUrl (no page origin to default to)");
  return String(base).replace(/\/+$/, "");
}

/**
 * ws:// for an http:// backend, wss:// for https://. A resume (since > 0) carries the
 * epoch `since` belongs to, when known: the server refuses it (4410) if its store's
 * lifetime changed since.
 */
export function webSocketUrl(baseUrl, jobId, since = 0, epoch = "") {
  const url = new URL(`${backendUrl(baseUrl)}/ws/orchestrate/${encodeURIComponent(jobId)}`);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (since > 0) {
    url.search = epoch ? `?since=${since}&epoch=${encodeURIComponent(epoch)}` : `?since=${since}`;
  }
  return url.toString();
}

/** A new job id (a UUID4; crypto.randomUUID is missing outside secure contexts). */
export function newJobId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The claims of a JWT (unverified: only to decide what the page offers). */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="));
    const claims = JSON.parse(json);
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** Whether `token` (or no token: auth off) lets its holder do `scope` on `jobId`. */
export function tokenAllows(token, scope, jobId) {
  if (!token) return true;
  const claims = tokenClaims(token);
  if (!claims) return false;
  const scopes = String(claims.scope || "").split(/\s+/);
  return scopes.includes(scope) && (!claims.job || claims.job === jobId);
}

async function getJson(path, { baseUrl, token, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`${backendUrl(baseUrl)}${path}`, { headers, signal, cache: "no-store" });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = (body && body.error) || `HTTP ${response.status}`;
    throw new ChimeraHttpError(response.status, message);
  }
  return body;
}

/** GET /api/jobs/{jobId}: the job's snapshot (throws ChimeraHttpError); view: basic | full. */
export function getJob(jobId, { view = "", ...options } = {}) {
  const query = view ? `?view=${encodeURIComponent(view)}` : "";
  return getJson(`/api/jobs/${encodeURIComponent(jobId)}${query}`, options);
}

/** GET /api/jobs: `{jobs: [...], next_page_token}`, newest first. */
export async function listJobs({ pageSize = 20, pageToken = "", ...options } = {}) {
  const query = new URLSearchParams({ page_size: String(pageSize) });
  if (pageToken) query.set("page_token", pageToken);
  const body = await getJson(`/api/jobs?${query}`, options);
  if (Array.isArray(body)) return { jobs: body, next_page_token: "" };
  return { jobs: body?.jobs || [], next_page_token: body?.next_page_token || "" };
}

function emptyTeam(team) {
  return { team, status: "idle", model: "", thoughts: [], code: "", language: "", token_count: 0, error: "" };
}

/** A thought from an event or a snapshot: `{id, text, timestamp}`. */
function thoughtOf(value, team, index, fallbackTime) {
  if (typeof value === "string") {
    // Servers before the guide's format carried no id: the position is stable.
    return { id: `${team}-${index}`, text: value, timestamp: fallbackTime || "" };
  }
  return {
    id: String(value.id ?? `${team}-${index}`),
    text: String(value.text ?? value.thought ?? ""),
    timestamp: value.timestamp || fallbackTime || "",
  };
}

/** The model of one job that events and snapshots are folded into. */
export function emptyJob(jobId, { brief = "", teams = [] } = {}) {
  // epoch: the server store's lifetime last_sequence belongs to ("" until known).
  const job = {
    job_id: jobId, brief, state: "pending", error: "", last_sequence: 0, epoch: "", teams: {},
  };
  for (const team of teams) job.teams[team] = emptyTeam(team);
  return job;
}

function teamOf(job, name) {
  if (!job.teams[name]) job.teams[name] = emptyTeam(name);
  return job.teams[name];
}

/** Folds one job event (a message with `seq`) into `job`; false if it was already there. */
export function applyEvent(job, msg) {
  if (typeof msg.seq !== "number" || msg.seq <= job.last_sequence) return false;
  job.last_sequence = msg.seq;
  const data = msg.data || {};
  if (!msg.team) {
    if (msg.type === "status_change" && data.status) job.state = data.status;
    else if (msg.type === "error" && data.error) job.error = data.error;
    return true;
  }
  const run = teamOf(job, msg.team);
  if (job.state === "pending") job.state = "running";
  switch (msg.type) {
    case "status_change":
      run.status = data.status || run.status;
      if (data.model) run.model = data.model;
      break;
    case "thought_added": {
      const thought = thoughtOf(data, msg.team, run.thoughts.length, msg.timestamp);
      if (!run.thoughts.some((t) => t.id === thought.id)) run.thoughts.push(thought);
      break;
    }
    case "code_generated":
      run.code = data.code || "";
      run.language = data.language || "";
      run.token_count = Number(data.token_count || 0);
      break;
    case "error":
      run.error = data.error || "error";
      break;
    default:
      break;
  }
  return true;
}

/**
 * Folds a newer snapshot into `job`: true if it changed it, false if it was not newer,
 * "partial" if the snapshot leaves out thoughts `job` does not have (the server's default
 * view carries the latest 100 of each team): then ask again with `view: "full"`.
 */
export function applySnapshot(job, snap) {
  // Another lifetime of the server's store: the id may name another job now, so nothing
  // of it is folded into this one (the next resume is refused with 4410, and starts over).
  if (job.last_sequence > 0 && job.epoch && snap.epoch && snap.epoch !== job.epoch) return false;
  if (!job.brief && snap.brief) job.brief = snap.brief;
  const seq = snap.last_sequence || 0;
  if (seq < job.last_sequence || (seq === job.last_sequence && !JOB_FINAL.has(snap.state))) {
    return false;
  }
  const teams = {};
  for (const t of snap.teams || []) {
    const before = job.teams[t.team]?.thoughts || [];
    const latest = (t.thoughts || []).map((value, i) => thoughtOf(value, t.team, i, ""));
    const count = typeof t.thought_count === "number" ? t.thought_count : latest.length;
    let thoughts = latest;
    if (latest.length < count) {
      // Only the latest: the earlier ones must be the ones already here.
      const at = latest.length ? before.findIndex((b) => b.id === latest[0].id) : before.length;
      if (at < 0) return "partial";
      thoughts = before.slice(0, at).concat(latest);
      if (thoughts.length !== count) return "partial";
    }
    // Keep the times the events gave, for snapshots that carry none.
    for (const thought of thoughts) {
      if (!thought.timestamp) thought.timestamp = before.find((b) => b.id === thought.id)?.timestamp || "";
    }
    teams[t.team] = { ...emptyTeam(t.team), ...t, thoughts };
  }
  job.brief = snap.brief ?? job.brief;
  job.state = snap.state || job.state;
  job.last_sequence = seq;
  if (snap.epoch) job.epoch = snap.epoch;
  job.teams = teams;
  return true;
}

export function isFinal(state) {
  return JOB_FINAL.has(state);
}

/**
 * Follows one job. Options:
 *   baseUrl       the backend (default: the page's origin); ws:// or wss:// is derived
 *   token         a bearer token (offered as the ["chimera.bearer", token] subprotocol pair
 *                 and as an Authorization header when polling)
 *   create        {brief, teams, request_id}: submit the job on its own socket first
 *   onUpdate(job)             the model changed (an event or a newer snapshot)
 *   onConnection(state, info) connecting | connected | reconnecting | polling | offline | closed;
 *                             info.attempt, info.attempts for reconnecting
 *   onMessage(msg)            every WebSocket message, as parsed
 *   onCreated(jobId)          the server accepted `create`
 *   onMissing(jobId)          the first snapshot answered 404: no such job (yet). Following
 *                             goes on (the socket waits for a job with this id: a page may
 *                             open before its job is created); the first event ends it.
 *                             Never with `create`.
 *   onError(error)            {kind: "auth" | "create" | "cancel" | "gone" | "server", message, status?, code?,
 *                             expired? (auth: the token expired while the socket was open, close 4401)}
 *   log                       a console-like object (default console); null for silence
 * Returns {job, missing, cancel(), close(), get connection()} (`missing`: the last snapshot
 * answered 404 and no event has come since).
 */
export function followJob(jobId, options = {}) {
  return new JobFollower(jobId, options);
}

class JobFollower {
  constructor(jobId, options) {
    this.jobId = jobId;
    this.options = options;
    this.baseUrl = backendUrl(options.baseUrl);
    this.token = options.token || "";
    this.log = options.log === undefined ? console : options.log;
    this.job = emptyJob(jobId, { brief: options.create?.brief, teams: options.create?.teams || [] });
    this.connection = "connecting";
    this.attempt = 0;
    this.ws = null;
    this.wsOpen = false; // the server's `connected` arrived on the current socket
    this.dropped = false; // the WebSocket went down at least once
    this.pollOk = false;
    this.pollTimer = null;
    this.retryTimer = null;
    this.pingTimer = null;
    this.stopped = false;
    this.missing = false;
    this.pendingCreate = options.create ? { request_id: newJobId(), ...options.create } : null;
    // Back online: try the WebSocket now rather than at the next retry.
    this.onOnline = () => {
      if (!this.stopped && !this.ws && this.dropped) this.connect();
    };
    this.onOffline = () => this.refreshConnection();
    globalThis.addEventListener?.("online", this.onOnline);
    globalThis.addEventListener?.("offline", this.onOffline);
    this.start();
  }

  emit(name, ...args) {
    const fn = this.options[name];
    if (typeof fn === "function") {
      try {
        fn(...args);
      } catch (err) {
        this.log?.error?.(err);
      }
    }
  }

  async start() {
    if (!this.pendingCreate) {
      await this.loadSnapshot();
      if (this.missing && !this.stopped) this.emit("onMissing", this.jobId);
    }
    if (!this.stopped) this.connect();
  }

  /** Loads the snapshot; true when the server answered. */
  async loadSnapshot() {
    try {
      const where = { baseUrl: this.baseUrl, token: this.token };
      let applied = applySnapshot(this.job, await getJob(this.jobId, where));
      if (applied === "partial" && !this.stopped) {
        applied = applySnapshot(this.job, await getJob(this.jobId, { ...where, view: "full" }));
      }
      if (this.stopped) return true;
      this.missing = false;
      if (applied === true) this.emit("onUpdate", this.job);
      if (isFinal(this.job.state)) this.finish();
      return true;
    } catch (err) {
      if (err instanceof ChimeraHttpError) {
        if (err.isAuth) {
          this.fail({ kind: "auth", status: err.status, message: err.message });
        }
        // 404: the job does not exist (yet): the WebSocket waits for it.
        if (err.status === 404 && this.job.last_sequence === 0) this.missing = true;
        return true;
      }
      return false; // the server cannot be reached
    }
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    const url = webSocketUrl(this.baseUrl, this.jobId, this.job.last_sequence, this.job.epoch);
    this.log?.log?.(`[WebSocket] Connecting to ${url}`);
    let ws;
    try {
      ws = this.token ? new WebSocket(url, [BEARER_PROTOCOL, this.token]) : new WebSocket(url);
    } catch (err) {
      this.log?.error?.(err);
      this.dropped = true;
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.wsOpen = false;
    ws.onmessage = (event) => this.onMessage(ws, event);
    ws.onclose = (event) => this.onClose(ws, event);
    if (!this.dropped) this.setConnection("connecting");
  }

  onMessage(ws, event) {
    if (ws !== this.ws) return;
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg.type === "connected") {
      this.log?.log?.(`[WebSocket] Connected to job ${this.jobId}`);
    }
    this.log?.log?.("[CommandCenter] WebSocket message:", msg);
    this.emit("onMessage", msg);
    switch (msg.type) {
      case "connected":
        // The lifetime the events that follow belong to. Holding a position of another
        // one, we sent it, so the server closes this socket (4410) and we start over.
        if (msg.data?.epoch && (!this.job.epoch || this.job.last_sequence === 0)) {
          this.job.epoch = msg.data.epoch;
        }
        this.wsOpen = true;
        this.attempt = 0;
        this.stopPolling();
        clearInterval(this.pingTimer);
        this.pingTimer = setInterval(() => this.send({ type: "ping" }), PING_INTERVAL_MS);
        if (this.pendingCreate) {
          const { brief, teams, request_id } = this.pendingCreate;
          this.send({ type: "create_job", brief, teams: teams || [], request_id });
        }
        this.setConnection("connected");
        return;
      case "job_created":
        this.pendingCreate = null;
        if (this.job.state === "pending") this.job.state = "running";
        this.emit("onCreated", msg.job_id || this.jobId);
        this.emit("onUpdate", this.job);
        return;
      case "pong":
        return;
      default:
        break;
    }
    if (typeof msg.seq === "number") {
      this.missing = false;
      if (applyEvent(this.job, msg)) this.emit("onUpdate", this.job);
      if (!this.job.brief && !this.briefAsked) {
        // The job came into being while we waited on its socket: the brief is in its snapshot.
        this.briefAsked = true;
        this.loadSnapshot();
      }
      if (!msg.team && isFinal(this.job.state)) this.finished = true;
      return;
    }
    if (msg.type === "error") {
      const data = msg.data || {};
      const message = data.error || data.message || "error";
      if (this.pendingCreate) {
        this.fail({ kind: "create", message, code: data.code || "" });
      } else if (this.cancelling) {
        this.cancelling = false;
        this.emit("onError", { kind: "cancel", message, code: data.code || "" });
      } else {
        this.log?.warn?.(`[CommandCenter] server: ${message}`);
      }
    }
  }

  async onClose(ws, event) {
    if (ws !== this.ws || this.stopped) return;
    const wasLive = this.wsOpen;
    this.ws = null;
    this.wsOpen = false;
    clearInterval(this.pingTimer);
    if (event.code === 1000 && (this.finished || isFinal(this.job.state))) {
      this.finish();
      return;
    }
    if (event.code === CLOSE_TOO_SLOW) {
      this.connect(); // fell behind: resume from the last seq at once
      return;
    }
    if (event.code === CLOSE_TOKEN_EXPIRED) {
      // The server no longer accepts this token: retrying with it cannot work.
      this.fail({ kind: "auth", status: 401, expired: true, message: "token expired" });
      return;
    }
    if (event.code === CLOSE_HISTORY_GONE || event.code === CLOSE_SINCE_TOO_LARGE) {
      // The events cannot be replayed from our position: start again from the snapshot,
      // from nothing (the id may name another job now: none of ours is kept).
      Object.assign(this.job, emptyJob(this.jobId));
      const reached = await this.loadSnapshot();
      if (this.stopped) return;
      if (reached && this.job.last_sequence === 0) {
        this.fail({ kind: "gone", message: `job ${this.jobId} is no longer on the server` });
        return;
      }
      this.connect();
      return;
    }
    if (wasLive || !this.dropped) {
      this.log?.log?.("[CommandCenter] WebSocket disconnected, falling back to polling");
      // What polling last said is stale once the live stream is lost (the server may be gone).
      this.pollOk = false;
    }
    this.dropped = true;
    this.startPolling();
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.attempt += 1;
    const delay = this.attempt <= RECONNECT_ATTEMPTS ? RECONNECT_DELAY_MS : BACKGROUND_RETRY_MS;
    this.refreshConnection();
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  startPolling() {
    if (this.pollTimer !== null || this.stopped) return;
    const tick = async () => {
      if (this.stopped || this.wsOpen) {
        this.pollTimer = null;
        return;
      }
      this.pollOk = await this.loadSnapshot();
      if (this.stopped || this.wsOpen) {
        this.pollTimer = null;
        return;
      }
      this.refreshConnection();
      this.pollTimer = setTimeout(tick, POLL_INTERVAL_MS);
    };
    this.pollTimer = setTimeout(tick, 0);
  }

  stopPolling() {
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  refreshConnection() {
    if (this.stopped) return;
    if (this.wsOpen) this.setConnection("connected");
    else if (this.pollOk && globalThis.navigator?.onLine !== false) this.setConnection("polling");
    else if (this.attempt <= RECONNECT_ATTEMPTS && globalThis.navigator?.onLine !== false) {
      this.setConnection("reconnecting");
    } else this.setConnection("offline");
  }

  setConnection(state) {
    const info = { attempt: this.attempt, attempts: RECONNECT_ATTEMPTS };
    const same = state === this.connection && info.attempt === this.shownAttempt;
    this.connection = state;
    this.shownAttempt = info.attempt;
    if (!same || state === "connecting") this.emit("onConnection", state, info);
  }

  /** The job reached its final state and the stream ended: stop everything. */
  finish() {
    if (this.stopped) return;
    this.teardown();
    this.setConnection("closed");
    this.stopped = true;
  }

  fail(error) {
    this.teardown();
    this.stopped = true;
    this.emit("onError", error);
  }

  teardown() {
    globalThis.removeEventListener?.("online", this.onOnline);
    globalThis.removeEventListener?.("offline", this.onOffline);
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    this.stopPolling();
    const ws = this.ws;
    this.ws = null;
    this.wsOpen = false;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
  }

  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** Asks the server to cancel the job (on its socket); false if the socket is down. */
  cancel() {
    const sent = this.send({ type: "cancel_job" });
    if (sent) this.cancelling = true;
    return sent;
  }

  /** Stops following (the page left the job). */
  close() {
    if (this.stopped) return;
    this.teardown();
    this.stopped = true;
  }
}
