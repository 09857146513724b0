// The Command Center page: the brief form and recent jobs at /, one job at /jobs/{id}.
// Everything the models or users wrote is put in the page with textContent, never as HTML.
import {
  TEAMS,
  followJob,
  isFinal,
  listJobs,
  newJobId,
  tokenAllows,
} from "./chimera.js";

const TOKEN_KEY = "chimera.token";
const JOBS_POLL_MS = 2000;
const TEAM_LABELS = { anthropic: "Anthropic", google: "Google" };
const STEPS = ["thinking", "generating", "complete"];
const CONNECTION_LABELS = {
  connecting: () => "Connecting…",
  connected: () => "Live",
  reconnecting: (info) => `Reconnecting (attempt ${info.attempt} of ${info.attempts})…`,
  polling: () => "Polling — WebSocket unavailable",
  offline: () => "Offline — retrying",
  closed: () => "Finished — stream closed",
};

const $ = (selector, root = document) => root.querySelector(selector);

/** Makes an element; `text` goes in as textContent (never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// -- token --------------------------------------------------------------------------------

function takeTokenFromFragment() {
  // A viewer link carries the token in the fragment (never sent to a server); keep it
  // in this tab and take it out of the address bar and history.
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!match) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
  history.replaceState(history.state, "", location.pathname + location.search);
}

const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

function showAuth(message, expired = false) {
  stopAll();
  for (const id of ["command-center", "job-view"]) {
    const section = document.getElementById(id);
    if (section) section.hidden = true;
  }
  $("#connection").hidden = true;
  const had = token();
  $("#auth-message").textContent = expired
    ? "Your token expired: paste a new one to keep watching."
    : had
      ? `The server refused this token: ${message}. Paste a valid one.`
      : `This server needs a token to show jobs (${message}).`;
  $("#auth").hidden = false;
  $("#token-input").value = "";
  $("#token-input").focus();
}

function onTokenSubmit(event) {
  event.preventDefault();
  const value = $("#token-input").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("#auth").hidden = true;
  route();
}

// -- routing ------------------------------------------------------------------------------

let follower = null;
let jobsTimer = null;

function stopAll() {
  follower?.close();
  follower = null;
  view = null;
  clearTimeout(jobsTimer);
  jobsTimer = null;
}

function route() {
  stopAll();
  $("#auth").hidden = true;
  const match = /^\/jobs\/([A-Za-z0-9_-]{1,64})\/?$/.exec(location.pathname);
  if (match) {
    showJob(match[1]);
  } else if (!document.getElementById("command-center")) {
    location.assign("/"); // the job page has no Command Center: load it
  } else {
    showCommandCenter();
  }
}

function navigate(path) {
  history.pushState({}, "", path);
  route();
}

// -- the Command Center ---------------------------------------------------------------------

function showCommandCenter() {
  document.title = "Chimera · Command Center";
  $("#command-center").hidden = false;
  $("#job-view").hidden = true;
  $("#connection").hidden = true;
  $("#crumb-job").hidden = true;
  refreshJobs();
}

async function refreshJobs() {
  clearTimeout(jobsTimer);
  try {
    const { jobs } = await listJobs({ pageSize: 20, token: token() });
    renderJobs(jobs);
    $("#jobs-status").textContent = "updating live";
  } catch (err) {
    if (err.isAuth) {
      showAuth(err.message);
      return;
    }
    $("#jobs-status").textContent = `cannot reach the server (${err.message}); retrying`;
  }
  if ($("#command-center").hidden) return;
  jobsTimer = setTimeout(refreshJobs, JOBS_POLL_MS);
}

function age(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

function renderJobs(jobs) {
  const list = $("#jobs");
  const items = jobs.map((job) => {
    const link = el(
      "a",
      { href: `/jobs/${job.job_id}`, class: "job-link" },
      el("span", { class: "badge", "data-state": job.state, text: job.state }),
      el("span", { class: "job-brief", text: job.brief }),
      el("span", { class: "job-teams", text: (job.teams || []).map((t) => TEAM_LABELS[t.team] || t.team).join(" · ") }),
      el("time", { class: "job-age", datetime: job.create_time, text: age(job.create_time) }),
    );
    link.addEventListener("click", (event) => {
      if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      navigate(`/jobs/${job.job_id}`);
    });
    return el("li", { class: "job-item", "data-job-id": job.job_id, "data-state": job.state }, link);
  });
  list.replaceChildren(...items);
  $("#jobs-empty").hidden = jobs.length > 0;
}

function onBriefInput() {
  const n = $("#brief").value.length;
  $("#brief-count").textContent = `${n.toLocaleString("en")} / 10,000`;
}

function onSubmit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const brief = form.elements.brief.value.trim();
  const teams = [...form.querySelectorAll('input[name="team"]:checked')].map((box) => box.value);
  const problem = $("#submit-error");
  problem.hidden = true;
  if (!brief) return showFormError("Write a brief first.");
  if (teams.length === 0) return showFormError("Pick at least one team.");
  const jobId = newJobId();
  const button = $("#submit-button");
  button.disabled = true;
  button.textContent = "Starting…";
  stopAll();
  follower = followJob(jobId, {
    token: token(),
    create: { brief, teams, request_id: newJobId() },
    onCreated: () => {
      button.disabled = false;
      button.textContent = "Run brief";
      form.elements.brief.value = "";
      onBriefInput();
      history.pushState({}, "", `/jobs/${jobId}`);
      openJobView(jobId, follower);
    },
    onError: (error) => {
      button.disabled = false;
      button.textContent = "Run brief";
      if (error.kind === "auth") showAuth(error.message, error.expired);
      else if ($("#job-view").hidden) showFormError(`The server refused the brief: ${error.message}`);
      else view?.showError(error);
    },
    onUpdate: (job) => view?.render(job),
    onConnection: (state, info) => {
      view?.setConnection(state, info);
      if (state !== "connecting" && state !== "connected" && $("#job-view").hidden) {
        // The socket could not even carry the brief: say so on the form.
        follower?.close();
        button.disabled = false;
        button.textContent = "Run brief";
        showFormError("Cannot reach the server's WebSocket to submit; try again.");
      }
    },
  });
}

function showFormError(message) {
  const problem = $("#submit-error");
  problem.textContent = message;
  problem.hidden = false;
}

// -- one job --------------------------------------------------------------------------------

let view = null;

function showJob(jobId) {
  const current = followJob(jobId, {
    token: token(),
    onUpdate: (job) => view?.render(job),
    onConnection: (state, info) => view?.setConnection(state, info),
    onMissing: () => view?.setMissing(true),
    onError: (error) => {
      if (error.kind === "auth") showAuth(error.message, error.expired);
      else view?.showError(error);
    },
  });
  follower = current;
  openJobView(jobId, current);
}

function openJobView(jobId, current) {
  const cc = document.getElementById("command-center");
  if (cc) cc.hidden = true;
  const container = $("#job-view");
  view = new JobView(jobId, current);
  container.replaceChildren(view.root);
  container.hidden = false;
  $("#crumb-job").hidden = false;
  $("#connection").hidden = false;
  view.setConnection(current.connection, { attempt: current.attempt, attempts: 5 });
  view.render(current.job);
}

/** The first words of a brief, cut at a word to about `max` characters. */
function firstWords(text, max = 40) {
  let shown = "";
  for (const word of text.trim().split(/\s+/)) {
    const next = shown ? `${shown} ${word}` : word;
    if (next.length > max) return `${shown || word.slice(0, max)}…`;
    shown = next;
  }
  return shown;
}

function clock(iso) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return "";
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

class TeamPanel {
  constructor(team) {
    this.team = team;
    this.status = el("span", { class: "badge status", text: "idle" });
    this.model = el("span", { class: "model", text: "" });
    this.steps = el(
      "ol",
      { class: "steps", "aria-hidden": "true" },
      ...STEPS.map((step) => el("li", { "data-step": step, text: step })),
    );
    this.error = el("p", { class: "team-error", role: "alert", hidden: true });
    this.count = el("span", { class: "muted", text: "" });
    this.thoughts = el("ol", { class: "thoughts", "aria-live": "polite" });
    this.waiting = el("p", { class: "empty", text: "Waiting for the team to start…" });
    this.workingText = el("span", { text: "" });
    this.working = el("p", { class: "working", hidden: true }, el("span", { class: "spinner", "aria-hidden": "true" }), this.workingText);
    this.language = el("span", { class: "lang", text: "" });
    this.tokens = el("span", { class: "tokens", text: "" });
    this.copy = el("button", { type: "button", class: "copy", text: "Copy" });
    this.codeText = el("code", {});
    this.code = el("pre", { class: "code", "data-code": "" }, this.codeText);
    this.codeBox = el(
      "div",
      { class: "code-box", hidden: true },
      el("div", { class: "code-head" }, el("span", { class: "code-title", text: "Code" }), this.language, this.tokens, this.copy),
      this.code,
    );
    this.root = el(
      "article",
      { class: "team card", "data-team": team, "data-status": "idle" },
      el(
        "header",
        { class: "team-head" },
        el("h2", { text: TEAM_LABELS[team] || team }),
        this.model,
        this.status,
      ),
      this.steps,
      this.error,
      el("h3", { class: "sub" }, el("span", { text: "Thoughts" }), this.count),
      this.thoughts,
      this.waiting,
      this.working,
      this.codeBox,
    );
    this.copy.addEventListener("click", () => this.copyCode());
  }

  async copyCode() {
    const text = this.codeText.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // No clipboard API (not a secure context): select the code and copy that.
      const range = document.createRange();
      range.selectNodeContents(this.codeText);
      const selection = getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand("copy");
    }
    this.copy.textContent = "Copied";
    setTimeout(() => (this.copy.textContent = "Copy"), 1500);
  }

  render(run) {
    this.root.dataset.status = run.status;
    this.status.textContent = run.status;
    this.status.dataset.state = run.status;
    this.model.textContent = run.model || "";
    const reached = STEPS.indexOf(run.status);
    for (const [i, item] of [...this.steps.children].entries()) {
      item.dataset.done = String(reached >= 0 && i <= reached);
    }
    this.error.hidden = !run.error;
    this.error.textContent = run.error ? `Error: ${run.error}` : "";
    this.renderThoughts(run.thoughts);
    this.count.textContent = run.thoughts.length ? String(run.thoughts.length) : "";
    this.waiting.hidden = run.status !== "idle" || run.thoughts.length > 0;
    const working = { thinking: "Thinking…", generating: "Writing the code…" }[run.status];
    this.working.hidden = !working || this.jobOver;
    this.workingText.textContent = working || "";
    if (run.code) {
      if (this.codeText.textContent !== run.code) this.codeText.textContent = run.code;
      this.language.textContent = run.language || "";
      this.tokens.textContent = `${Number(run.token_count || 0).toLocaleString("en")} tokens`;
      this.codeBox.hidden = false;
    } else {
      this.codeBox.hidden = true;
    }
  }

  renderThoughts(thoughts) {
    const list = this.thoughts;
    const shown = [...list.children].map((item) => item.dataset.thoughtId);
    const prefix = shown.every((id, i) => thoughts[i]?.id === id);
    if (!prefix) list.replaceChildren();
    const start = prefix ? shown.length : 0;
    if (start === thoughts.length) return;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    for (const thought of thoughts.slice(start)) {
      list.append(
        el(
          "li",
          { class: "thought", "data-thought-id": thought.id },
          el("time", { datetime: thought.timestamp || null, text: clock(thought.timestamp) }),
          el("p", { text: thought.text }),
        ),
      );
    }
    if (atBottom) list.scrollTop = list.scrollHeight;
  }
}

class JobView {
  constructor(jobId, current) {
    this.jobId = jobId;
    this.follower = current;
    this.panels = new Map();
    this.state = el("span", { class: "badge job-state", text: "pending" });
    this.brief = el("h1", { class: "brief", text: "" });
    this.cancel = el("button", { type: "button", id: "cancel", class: "danger", hidden: true, text: "Cancel job" });
    this.error = el("p", { class: "job-error", id: "job-error", role: "alert", hidden: true });
    this.teams = el("div", { class: "teams" });
    this.missing = false;
    // What a link to an id the server does not know shows (mistyped, or not created yet).
    this.missingBox = el(
      "div",
      { class: "card missing", id: "job-missing", role: "alert", hidden: true },
      el("h1", { text: "No such job" }),
      el(
        "p",
        {},
        el("span", { text: "This server has no job with the id " }),
        el("code", { text: jobId }),
        el("span", { text: ". Check the link, or " }),
        el("a", { href: "/", id: "back-to-jobs", text: "go back to the list of jobs" }),
        el("span", { text: "." }),
      ),
      el("p", { class: "hint", text: "If a job with this id starts, it will show here." }),
    );
    this.head = el(
      "div",
      { class: "job-head" },
      el(
        "div",
        { class: "job-title" },
        el("p", { class: "eyebrow" }, el("span", { text: "Job " }), el("code", { text: jobId })),
        this.brief,
      ),
      el("div", { class: "job-actions" }, this.state, this.cancel),
    );
    this.root = el(
      "section",
      { id: "job", "data-job-id": jobId, "data-job-status": "pending" },
      this.missingBox,
      this.head,
      this.error,
      this.teams,
    );
    this.cancel.addEventListener("click", () => {
      if (this.follower.cancel()) {
        this.cancel.disabled = true;
        this.cancel.textContent = "Cancelling…";
      }
    });
  }

  panel(team) {
    let panel = this.panels.get(team);
    if (!panel) {
      panel = new TeamPanel(team);
      this.panels.set(team, panel);
      // Keep a stable order: Anthropic, then Google, then anything else.
      const order = (name) => (TEAMS.includes(name) ? TEAMS.indexOf(name) : TEAMS.length);
      const after = [...this.panels.keys()].filter((name) => order(name) > order(team));
      const before = after.length ? this.panels.get(after[0]).root : null;
      this.teams.insertBefore(panel.root, before && before.parentNode ? before : null);
    }
    return panel;
  }

  render(job) {
    // An event or a snapshot: the job exists (it was created after the page opened).
    if (this.missing && (job.last_sequence > 0 || job.brief)) this.setMissing(false);
    this.root.dataset.jobStatus = job.state;
    this.state.textContent = job.state;
    this.state.dataset.state = job.state;
    this.brief.textContent = job.brief || (job.state === "pending" ? "Waiting for this job to start…" : "…");
    if (!this.missing) document.title = `Chimera · ${job.state} · ${job.brief || this.jobId}`;
    // The breadcrumb: the brief's first words (the whole id on hover), or the whole id.
    const crumb = $("#crumb-job");
    crumb.textContent = job.brief ? firstWords(job.brief) : `Job ${this.jobId}`;
    crumb.title = this.jobId;
    crumb.classList.toggle("words", Boolean(job.brief));
    const names = Object.keys(job.teams);
    for (const name of names.length ? names : TEAMS) {
      this.panel(name).jobOver = isFinal(job.state);
      this.panel(name).render(job.teams[name] || { status: "idle", thoughts: [], code: "", error: "", model: "" });
    }
    if (job.error) this.showError({ message: job.error });
    this.updateCancel();
  }

  /** No such job (the snapshot's 404), or (false) the job turned up after all. */
  setMissing(missing) {
    this.missing = missing;
    this.root.dataset.missing = String(missing);
    this.missingBox.hidden = !missing;
    this.head.hidden = missing;
    this.teams.hidden = missing;
    // The socket still waits for the id, but "Live" would say a job is being followed.
    $("#connection").hidden = missing;
    if (missing) document.title = "Chimera · no such job";
    this.updateCancel();
  }

  updateCancel() {
    const final = isFinal(this.root.dataset.jobStatus);
    const allowed = tokenAllows(token(), "cancel", this.jobId);
    this.cancel.hidden = final || !allowed || this.missing;
    if (!this.cancel.textContent.startsWith("Cancelling")) {
      this.cancel.disabled = this.follower.connection !== "connected";
    }
  }

  setConnection(state, info) {
    const indicator = $("#connection");
    indicator.dataset.connectionState = state;
    // The WebSocket attempts since it dropped (also while polling): a hook for tests.
    if (state === "connected" || state === "closed") delete indicator.dataset.attempt;
    else indicator.dataset.attempt = String(info.attempt);
    $(".label", indicator).textContent = CONNECTION_LABELS[state](info);
    this.updateCancel();
  }

  showError(error) {
    if (error.kind === "cancel") {
      this.cancel.disabled = false;
      this.cancel.textContent = "Cancel job";
    }
    this.error.textContent = error.message;
    this.error.hidden = false;
  }
}

// -- start ------------------------------------------------------------------------------------

takeTokenFromFragment();
$("#token-form").addEventListener("submit", onTokenSubmit);
const form = document.getElementById("submit");
if (form) {
  form.addEventListener("submit", onSubmit);
  $("#brief").addEventListener("input", onBriefInput);
}
addEventListener("popstate", route);
route();
