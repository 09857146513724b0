// The Command Center page: the brief form and recent jobs at /, one job at /jobs/{id}.
// Everything the models or users wrote is put in the page with textContent, never as HTML
// (code goes through highlight.js, which escapes it: code_view.js).
import {
  TEAMS,
  followJob,
  isFinal,
  listJobs,
  newJobId,
  tokenAllows,
} from "./chimera.js";
import { CodeView } from "./code_view.js";
import { renderDiff } from "./compare.js";

const TOKEN_KEY = "chimera.token";
const JOBS_POLL_MS = 2000;
const TEAM_LABELS = { anthropic: "Anthropic", google: "Google" };
const STEPS = ["thinking", "generating", "complete"];
const TEAM_DONE = new Set(["complete", "error", "cancelled"]);
// Each team's figures, in the panel and in the Compare view: [key, label].
const STATS = [
  ["first_thought", "1st thought"],
  ["first_code", "1st code"],
  ["total", "Total"],
  ["input_tokens", "Tokens in"],
  ["output_tokens", "Tokens out"],
];
const CONNECTION_LABELS = {
  connecting: () => "Connecting…",
  connected: () => "Live",
  reconnecting: (info) => `Reconnecting (attempt ${info.attempt} of ${info.attempts})…`,
  polling: () => "Polling — WebSocket unavailable",
  offline: () => "Offline — retrying",
  closed: () => "Finished — stream closed",
};

const $ = (selector, root = document) => root.querySelector(selector);
// Teams in a stable order: Anthropic, then Google, then anything else.
const teamOrder = (name) => (TEAMS.includes(name) ? TEAMS.indexOf(name) : TEAMS.length);

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
    history: true, // opened on a job under way: its earlier events give the teams' times
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

/** Seconds from `from` to `to` (ISO timestamps) as "1.2 s" or "2 min 05 s"; "—" if unknown. */
function duration(from, to) {
  const ms = Date.parse(to) - Date.parse(from);
  if (!from || !to || !Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
}

/** A team's figures: `{key: {text, value}}` (value: a number to compare, or null). */
function teamStats(run, job) {
  const times = run.times || {};
  const start = times.started || job.create_time || "";
  const since = (at) => {
    const text = duration(start, at);
    return { text, value: text === "—" ? null : Date.parse(at) - Date.parse(start) };
  };
  const count = (n, known) => (known ? { text: Number(n).toLocaleString("en"), value: Number(n) } : { text: "—", value: null });
  return {
    first_thought: since(times.first_thought),
    first_code: since(times.first_code),
    total: since(times.ended),
    input_tokens: count(run.input_tokens, typeof run.input_tokens === "number"),
    output_tokens: count(run.token_count, run.code_final || TEAM_DONE.has(run.status)),
  };
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
    this.wrap = el("button", { type: "button", class: "wrap-toggle", "aria-pressed": "true", text: "Wrap", title: "Wrap long lines (off: scroll sideways)" });
    this.codeView = new CodeView();
    this.codeTitle = el("span", { class: "code-title", text: "Code" });
    this.codeBox = el(
      "div",
      { class: "code-box", hidden: true },
      el("div", { class: "code-head" }, this.codeTitle, this.language, this.tokens, this.wrap, this.copy),
      this.codeView.pre,
    );
    this.stats = el("dl", { class: "stats" });
    this.statValues = {};
    for (const [key, label] of STATS) {
      this.statValues[key] = el("dd", { "data-stat": key, text: "—" });
      this.stats.append(el("div", {}, el("dt", { text: label }), this.statValues[key]));
    }
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
      this.stats,
      this.error,
      el("h3", { class: "sub" }, el("span", { text: "Thoughts" }), this.count),
      this.thoughts,
      this.waiting,
      this.working,
      this.codeBox,
    );
    this.copy.addEventListener("click", () => this.copyCode());
    this.wrap.addEventListener("click", () => {
      const wrap = this.wrap.getAttribute("aria-pressed") !== "true";
      this.wrap.setAttribute("aria-pressed", String(wrap));
      this.codeView.setWrap(wrap);
    });
  }

  async copyCode() {
    const text = this.codeView.text;
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // No clipboard API (not a secure context): select the code and copy that.
      const range = document.createRange();
      range.selectNodeContents(this.codeView.code);
      const selection = getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand("copy");
    }
    this.copy.textContent = "Copied";
    setTimeout(() => (this.copy.textContent = "Copy"), 1500);
  }

  render(run, job) {
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
      // While the team writes, its code so far; the whole once code_generated came.
      const final = Boolean(run.code_final) || TEAM_DONE.has(run.status) || this.jobOver;
      this.codeView.show(run.code, { language: run.language || "", final });
      this.codeBox.dataset.final = String(final);
      this.codeTitle.textContent = final ? "Code" : "Code (being written)";
      this.language.textContent = run.language || "";
      this.tokens.textContent = final ? `${Number(run.token_count || 0).toLocaleString("en")} tokens` : "";
      this.codeBox.hidden = false;
    } else {
      this.codeBox.hidden = true;
    }
    const stats = teamStats(run, job);
    for (const [key] of STATS) this.statValues[key].textContent = stats[key].text;
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
    this.teams = el("div", { class: "teams", id: "teams" });
    this.missing = false;
    // The views: both teams (one at a time on a phone, by its tab) or the Compare view.
    this.mode = "teams";
    this.selected = TEAMS[0];
    this.tabs = el("div", { class: "view-tabs", role: "tablist", "aria-label": "Teams and the Compare view" });
    this.teamTabs = new Map();
    this.bothTab = this.tab("teams", "Both teams", "teams");
    this.compareTab = this.tab("compare", "Compare", "compare");
    this.compareTab.disabled = true;
    this.compareTab.title = "When both teams have finished";
    this.tabs.append(this.bothTab, this.compareTab);
    this.compare = el("section", { class: "compare card", id: "compare", role: "tabpanel", "aria-label": "Compare", hidden: true });
    this.compareKey = "";
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
      this.tabs,
      this.teams,
      this.compare,
    );
    this.tabs.addEventListener("keydown", (event) => this.onTabKey(event));
    this.cancel.addEventListener("click", () => {
      if (this.follower.cancel()) {
        this.cancel.disabled = true;
        this.cancel.textContent = "Cancelling…";
      }
    });
  }

  /** A tab button; `kind`: "team" (phones only), "teams" (wide screens only), "compare". */
  tab(name, label, kind) {
    const button = el("button", {
      type: "button", role: "tab", class: "view-tab", "data-tab": name, "data-kind": kind,
      "aria-controls": kind === "compare" ? "compare" : "teams", "aria-selected": "false",
      text: label,
    });
    button.addEventListener("click", () => this.select(name));
    return button;
  }

  /** Shows one tab's view: a team (on a phone: that team alone), both teams, or Compare. */
  select(name) {
    if (name === "compare") {
      if (this.compareTab.disabled) return;
      this.mode = "compare";
    } else {
      this.mode = "teams";
      if (name !== "teams") this.selected = name;
    }
    this.showTabs();
  }

  showTabs() {
    const teams = this.mode === "teams";
    this.teams.hidden = !teams || this.missing;
    this.compare.hidden = teams || this.missing;
    this.root.dataset.view = this.mode;
    this.teams.dataset.selected = this.selected;
    for (const [name, panel] of this.panels) panel.root.dataset.selected = String(name === this.selected);
    for (const [name, button] of this.teamTabs) {
      const on = teams && name === this.selected;
      button.setAttribute("aria-selected", String(on));
      button.tabIndex = on ? 0 : -1;
    }
    this.bothTab.setAttribute("aria-selected", String(teams));
    this.bothTab.tabIndex = teams ? 0 : -1;
    this.compareTab.setAttribute("aria-selected", String(!teams));
    this.compareTab.tabIndex = teams ? -1 : 0;
  }

  /** Arrow keys move between the tabs shown (the WAI-ARIA tabs pattern). */
  onTabKey(event) {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const shown = [...this.tabs.querySelectorAll("[role=tab]")].filter(
      (tab) => tab.offsetParent !== null && !tab.disabled,
    );
    const at = shown.indexOf(document.activeElement);
    if (at < 0) return;
    const next = shown[(at + step + shown.length) % shown.length];
    next.focus();
    next.click();
    event.preventDefault();
  }

  panel(team) {
    let panel = this.panels.get(team);
    if (!panel) {
      panel = new TeamPanel(team);
      this.panels.set(team, panel);
      panel.root.id = `team-${team}`;
      const after = [...this.panels.keys()].filter((name) => teamOrder(name) > teamOrder(team))
        .sort((a, b) => teamOrder(a) - teamOrder(b));
      const before = after.length ? this.panels.get(after[0]).root : null;
      this.teams.insertBefore(panel.root, before && before.parentNode ? before : null);
      const button = this.tab(team, TEAM_LABELS[team] || team, "team");
      button.setAttribute("aria-controls", panel.root.id);
      this.teamTabs.set(team, button);
      const next = after.length ? this.teamTabs.get(after[0]) : this.bothTab;
      this.tabs.insertBefore(button, next && next.parentNode ? next : this.bothTab);
      if (!this.panels.has(this.selected)) this.selected = team;
      this.showTabs();
    }
    return panel;
  }

  /** The Compare view, once both teams finished with code; otherwise its tab says why not. */
  renderCompare(job) {
    const names = [...this.panels.keys()].sort((a, b) => teamOrder(a) - teamOrder(b));
    this.tabs.hidden = this.missing || names.length < 2; // one team: nothing to switch or compare
    const runs = names.map((name) => job.teams[name]).filter(Boolean);
    const ready = runs.length >= 2 && runs.every((run) => TEAM_DONE.has(run.status));
    const withCode = ready && runs.slice(0, 2).every((run) => run.code && (run.code_final || run.status === "complete"));
    this.compareTab.disabled = !withCode;
    this.compareTab.title = withCode ? "The two programs side by side" : ready
      ? "Compare needs both teams' code" : "When both teams have finished";
    if (!withCode) {
      if (this.mode === "compare") this.select("teams");
      return;
    }
    const [left, right] = runs;
    const key = JSON.stringify([left.code, right.code, left.language, right.language, left.model, right.model]);
    if (key !== this.compareKey) {
      // The diff is made again only when a program changed; the figures on every update.
      this.compareKey = key;
      const title = (run) => `${TEAM_LABELS[run.team] || run.team}${run.model ? ` · ${run.model}` : ""}`;
      const { root, counts } = renderDiff(
        { title: title(left), code: left.code, language: left.language },
        { title: title(right), code: right.code, language: right.language },
      );
      const differ = counts.changed + counts.removed + counts.added;
      const name = (run) => TEAM_LABELS[run.team] || run.team;
      const summary = differ === 0
        ? "The two programs are the same."
        : `${differ.toLocaleString("en")} of ${(differ + counts.same).toLocaleString("en")} lines differ: `
          + `${counts.changed} changed, ${counts.removed} only in ${name(left)}, `
          + `${counts.added} only in ${name(right)}.`;
      this.compare.dataset.differences = String(differ);
      this.statsNode = el("table", { class: "compare-stats" });
      this.statsKey = "";
      this.compare.replaceChildren(
        el("div", { class: "compare-head" }, el("h2", { text: "Compare" }),
          el("p", { class: "muted", id: "compare-summary", text: summary }),
          el("p", { class: "legend" }, el("span", { class: "minus", text: `− ${name(left)}` }),
            el("span", { class: "plus", text: `+ ${name(right)}` }))),
        this.statsNode,
        root,
      );
    }
    const pair = runs.slice(0, 2);
    const statsKey = JSON.stringify(pair.map((run) => teamStats(run, job)));
    if (statsKey !== this.statsKey) {
      this.statsKey = statsKey;
      const table = this.statsTable(pair, job);
      this.statsNode.replaceWith(table);
      this.statsNode = table;
    }
  }

  /** The teams' figures side by side; the lower of each is marked (faster, fewer tokens). */
  statsTable(runs, job) {
    const stats = runs.map((run) => teamStats(run, job));
    const head = el("tr", {}, el("th", { scope: "col", text: "" }),
      ...runs.map((run) => el("th", { scope: "col", "data-column-team": run.team, text: TEAM_LABELS[run.team] || run.team })));
    const body = STATS.map(([key, label]) => {
      // Marked only where the figures shown differ (not 0.21 s against 0.24 s, both "0.2 s").
      const known = stats.every((s) => s[key].value !== null);
      const differ = new Set(stats.map((s) => s[key].text)).size > 1;
      const best = known && differ ? Math.min(...stats.map((s) => s[key].value)) : null;
      return el("tr", { "data-stat": key }, el("th", { scope: "row", text: label }),
        ...stats.map((s) => el("td", { "data-best": String(s[key].value === best), text: s[key].text })));
    });
    return el("table", { class: "compare-stats" }, el("thead", {}, head), el("tbody", {}, ...body));
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
      this.panel(name).render(job.teams[name] || { status: "idle", thoughts: [], code: "", error: "", model: "", times: {} }, job);
    }
    this.renderCompare(job);
    if (job.error) this.showError({ message: job.error });
    this.updateCancel();
  }

  /** No such job (the snapshot's 404), or (false) the job turned up after all. */
  setMissing(missing) {
    this.missing = missing;
    this.root.dataset.missing = String(missing);
    this.missingBox.hidden = !missing;
    this.head.hidden = missing;
    this.tabs.hidden = missing;
    this.showTabs();
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
