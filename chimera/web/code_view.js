// code_view.js — a team's code on the page, syntax-highlighted by highlight.js (pinned and
// vendored under /static/vendor/highlight/, see vendor/vendored.json) and growing as the
// team writes it. New text is appended as plain text at once; the whole is highlighted
// again at most every HIGHLIGHT_MIN_MS (longer when highlighting took long), so a long
// stream costs one highlight per interval, not one per delta; the final code at once.
// highlight.js escapes the code it returns as HTML, and what it returns is checked to be
// only its <span class="…"> before it is used: anything else is shown as text.
import hljs from "./vendor/highlight/highlight.min.js";

export const HIGHLIGHT_MIN_MS = 150;
// Highlighting again waits at least this many times what the last one took.
const HIGHLIGHT_COST_FACTOR = 8;
// What a component's code is most likely in, when its language is not said (yet).
const GUESSES = ["typescript", "javascript", "xml", "css", "python", "json"];
// Within this many pixels of the bottom, the view keeps following the new text.
const FOLLOW_PX = 24;

/** The highlight.js language for `language` (the fenced block's), or a guess from `code`. */
export function languageFor(language, code) {
  if (language && hljs.getLanguage(language)) return language;
  if (!code.trim()) return "plaintext";
  return hljs.highlightAuto(code.slice(0, 4000), GUESSES).language || "plaintext";
}

/** Only highlight.js's own markup: spans with a class, nothing else. */
function onlySpans(root) {
  for (const node of root.querySelectorAll("*")) {
    if (node.tagName !== "SPAN") return false;
    for (const attribute of node.attributes) if (attribute.name !== "class") return false;
  }
  return true;
}

/** `code` highlighted as `language` (a highlight.js name), as a fragment of spans and text. */
export function highlighted(code, language) {
  const html = hljs.highlight(code, { language, ignoreIllegals: true }).value;
  const template = document.createElement("template");
  template.innerHTML = html;
  if (onlySpans(template.content)) return template.content;
  const plain = document.createDocumentFragment();
  plain.append(code);
  return plain;
}

/**
 * `code` highlighted as one element per line (`span.line`), for views that lay lines out
 * themselves (the Compare view): the whole is highlighted at once, so a comment or a
 * string over several lines keeps its colour; a span open at a line break is closed there
 * and opened again on the next line. No element for the empty line after a final newline.
 */
export function highlightLines(code, language) {
  const lines = [];
  const stack = []; // the source spans open at this point
  let line;
  let open; // their copies in `line`
  const newLine = () => {
    line = document.createElement("span");
    line.className = "line";
    lines.push(line);
    open = [];
    let parent = line;
    for (const span of stack) {
      const copy = span.cloneNode(false);
      parent.append(copy);
      open.push(copy);
      parent = copy;
    }
  };
  const cursor = () => open.at(-1) || line;
  const walk = (node) => {
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) {
        child.data.split("\n").forEach((part, i) => {
          if (i > 0) newLine();
          if (part) cursor().append(part);
        });
      } else if (child.nodeType === Node.ELEMENT_NODE) {
        const copy = child.cloneNode(false);
        cursor().append(copy);
        stack.push(child);
        open.push(copy);
        walk(child);
        stack.pop();
        open.pop();
      }
    }
  };
  newLine();
  walk(highlighted(code, language));
  if (code.endsWith("\n")) lines.pop();
  return lines;
}

/** The view of one team's code: `pre[data-code] > code.hljs`. */
export class CodeView {
  constructor() {
    this.code = document.createElement("code");
    this.code.className = "hljs";
    this.pre = document.createElement("pre");
    this.pre.className = "code wrap";
    this.pre.dataset.code = "";
    this.pre.tabIndex = 0; // scrollable: reachable by keyboard
    this.pre.append(this.code);
    this.shown = ""; // the text in the view
    this.tail = null; // the text node new text is appended to, after the highlighted part
    this.language = "";
    this.given = ""; // the language the team said
    this.final = false;
    this.timer = null;
    this.cost = 0; // ms the last highlight took
    this.followed = false; // the view scrolled itself to the new text
  }

  /** Shows `code` (the whole, when `final`); the same text again changes nothing. */
  show(code, { language = "", final = false } = {}) {
    if (code === this.shown && final === this.final && language === this.given) return;
    const follow = this.pre.scrollHeight - this.pre.scrollTop - this.pre.clientHeight < FOLLOW_PX;
    if (this.tail && code.startsWith(this.shown)) {
      this.tail.appendData(code.slice(this.shown.length));
    } else {
      this.tail = document.createTextNode(code);
      this.code.replaceChildren(this.tail);
      this.code.dataset.highlighted = "0";
    }
    if (language !== this.given || !code.startsWith(this.shown)) this.language = "";
    this.given = language;
    this.shown = code;
    this.final = final;
    this.pre.dataset.writing = String(!final);
    if (final) this.highlight();
    else this.schedule();
    if (follow && !final) {
      this.pre.scrollTop = this.pre.scrollHeight;
      this.followed = true;
    } else if (final && this.followed) {
      // It followed the writing to the end: show the whole from its beginning.
      this.pre.scrollTop = 0;
      this.followed = false;
    } else {
      this.followed = false; // the reader scrolled away: leave the view where it is
    }
  }

  schedule() {
    if (this.timer !== null) return;
    const delay = Math.max(HIGHLIGHT_MIN_MS, this.cost * HIGHLIGHT_COST_FACTOR);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.highlight();
    }, delay);
  }

  /** Highlights everything shown now. */
  highlight() {
    clearTimeout(this.timer);
    this.timer = null;
    const started = performance.now();
    // A guess stays once made, unless the team names its language.
    if (!this.language || this.given) this.language = languageFor(this.given, this.shown);
    const { scrollTop, scrollLeft } = this.pre;
    this.tail = document.createTextNode("");
    this.code.replaceChildren(highlighted(this.shown, this.language), this.tail);
    this.pre.scrollTop = scrollTop;
    this.pre.scrollLeft = scrollLeft;
    this.code.className = `hljs language-${this.language}`;
    this.code.dataset.highlighted = String(this.shown.length);
    this.cost = performance.now() - started;
  }

  /** Long lines: wrapped (true) or scrolled sideways (false). */
  setWrap(wrap) {
    this.pre.classList.toggle("wrap", wrap);
  }

  get text() {
    return this.code.textContent;
  }

  dispose() {
    clearTimeout(this.timer);
    this.timer = null;
  }
}
