// compare.js — the Compare view: two teams' programs side by side, their differences
// marked. The diff is jsdiff's (the `diff` package, pinned and vendored under
// /static/vendor/diff/, see vendor/vendored.json): lines first (diffLines), then, in a
// line changed on both sides, the words that differ (diffWordsWithSpace). The page has
// both programs already, so the diff is made here, in the browser, with no request.
import "./vendor/diff/diff.min.js"; // its browser build: it defines globalThis.Diff
import { highlightLines, languageFor } from "./code_view.js";

const { diffLines, diffWordsWithSpace } = globalThis.Diff;

function lines(text) {
  const all = text.split("\n");
  if (text.endsWith("\n")) all.pop();
  return all;
}

// Two lines are shown as one changed pair when this share of their words is common.
const PAIR_SIMILARITY = 0.3;
// Larger runs of changed lines are paired in order (aligning them costs their product).
const ALIGN_MAX = 200;

function words(line) {
  return new Set(line.match(/[A-Za-z_$][\w$]*|\S/g) || []);
}

/** How alike two lines are: the share of their words they have in common (0 to 1). */
function similarity(a, b) {
  if (a.size === 0 && b.size === 0) return 1;
  let common = 0;
  for (const word of a) if (b.has(word)) common += 1;
  return common / Math.max(a.size, b.size);
}

/**
 * Which removed lines pair with which added ones, in order: the pairing whose
 * similarities add up to the most, among lines at least PAIR_SIMILARITY alike (a
 * Needleman–Wunsch alignment), so that a line is set beside its own new version rather
 * than beside whatever line has its position. Returns [[i, j], ...].
 */
function align(removed, added) {
  const n = removed.length;
  const m = added.length;
  if (n * m > ALIGN_MAX * ALIGN_MAX) {
    return Array.from({ length: Math.min(n, m) }, (_, k) => [k, k]);
  }
  const a = removed.map(words);
  const b = added.map(words);
  const score = Array.from({ length: n + 1 }, () => new Float64Array(m + 1));
  const sim = Array.from({ length: n }, (_, i) => b.map((w) => similarity(a[i], w)));
  for (let i = 1; i <= n; i += 1) {
    for (let j = 1; j <= m; j += 1) {
      const s = sim[i - 1][j - 1];
      const pair = s >= PAIR_SIMILARITY ? score[i - 1][j - 1] + s : -1;
      score[i][j] = Math.max(score[i - 1][j], score[i][j - 1], pair);
    }
  }
  const pairs = [];
  for (let i = n, j = m; i > 0 && j > 0;) {
    const s = sim[i - 1][j - 1];
    if (s >= PAIR_SIMILARITY && score[i][j] === score[i - 1][j - 1] + s) {
      pairs.push([i - 1, j - 1]);
      i -= 1;
      j -= 1;
    } else if (score[i][j] === score[i - 1][j]) i -= 1;
    else j -= 1;
  }
  return pairs.reverse();
}

/**
 * The rows of a side-by-side view of `left` and `right`: `{kind, left, right}` where kind
 * is "same", "changed" (a line on each side, different), "removed" (only on the left) or
 * "added" (only on the right), and each side is `{n, text}` (its 1-based line number) or
 * null. In a run of removed lines followed by added ones, alike lines are paired (align).
 */
export function compareRows(left, right) {
  const rows = [];
  let l = 1;
  let r = 1;
  const only = (kind, texts) => {
    for (const text of texts) {
      rows.push(kind === "removed"
        ? { kind, left: { n: l++, text }, right: null }
        : { kind, left: null, right: { n: r++, text } });
    }
  };
  const changes = diffLines(left, right);
  for (let i = 0; i < changes.length; i += 1) {
    const change = changes[i];
    if (!change.added && !change.removed) {
      for (const text of lines(change.value)) {
        rows.push({ kind: "same", left: { n: l++, text }, right: { n: r++, text } });
      }
      continue;
    }
    const removed = change.removed ? lines(change.value) : [];
    let added = change.added ? lines(change.value) : [];
    if (change.removed && changes[i + 1]?.added) {
      added = lines(changes[i + 1].value);
      i += 1;
    }
    let a = 0;
    let b = 0;
    for (const [x, y] of align(removed, added)) {
      only("removed", removed.slice(a, x));
      only("added", added.slice(b, y));
      rows.push({ kind: "changed", left: { n: l++, text: removed[x] }, right: { n: r++, text: added[y] } });
      a = x + 1;
      b = y + 1;
    }
    only("removed", removed.slice(a));
    only("added", added.slice(b));
  }
  return rows;
}

/** The character ranges `[start, end)` of the words that differ in a changed line pair. */
export function wordRanges(left, right) {
  const ranges = { left: [], right: [] };
  let a = 0;
  let b = 0;
  for (const part of diffWordsWithSpace(left, right)) {
    const n = part.value.length;
    if (part.removed) {
      if (part.value.trim()) ranges.left.push([a, a + n]);
      a += n;
    } else if (part.added) {
      if (part.value.trim()) ranges.right.push([b, b + n]);
      b += n;
    } else {
      a += n;
      b += n;
    }
  }
  return ranges;
}

/** Wraps the text in `ranges` (sorted, apart) of `root` in `mark.diff-word`, across spans. */
function markRanges(root, ranges) {
  if (!ranges.length) return;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const texts = [];
  while (walker.nextNode()) texts.push(walker.currentNode);
  let offset = 0;
  for (const node of texts) {
    const from = offset;
    const to = offset + node.data.length;
    offset = to;
    const cuts = ranges.filter(([start, end]) => start < to && end > from);
    if (!cuts.length) continue;
    const pieces = document.createDocumentFragment();
    let at = from;
    for (const [start, end] of cuts) {
      const s = Math.max(start, from);
      const e = Math.min(end, to);
      if (s > at) pieces.append(node.data.slice(at - from, s - from));
      const mark = document.createElement("mark");
      mark.className = "diff-word";
      mark.textContent = node.data.slice(s - from, e - from);
      pieces.append(mark);
      at = e;
    }
    if (at < to) pieces.append(node.data.slice(at - from));
    node.replaceWith(pieces);
  }
}

function cell(side, row, highlightedLines) {
  const value = row[side];
  const node = document.createElement("div");
  node.className = `side ${side}`;
  node.setAttribute("role", "cell");
  if (!value) {
    node.dataset.empty = "true";
    return node;
  }
  const number = document.createElement("span");
  number.className = "ln";
  number.textContent = String(value.n);
  const sign = document.createElement("span");
  sign.className = "sign";
  sign.setAttribute("aria-hidden", "true");
  sign.textContent = row.kind === "same" ? "" : side === "left" ? "−" : "+";
  const code = document.createElement("code");
  code.className = "src hljs";
  const line = highlightedLines[value.n - 1];
  if (line) code.append(line.cloneNode(true));
  else code.textContent = value.text;
  node.append(number, sign, code);
  return node;
}

/**
 * The Compare view's diff of two programs, `{title, code, language}` each: a header row,
 * then one row per line pair (`.diff-row[data-kind]`), differences marked: a line only
 * on one side, or changed, is tinted; in a changed pair the differing words are
 * `mark.diff-word`. Returns `{root, counts}` (counts of rows by kind).
 */
export function renderDiff(left, right) {
  const rows = compareRows(left.code, right.code);
  const lit = {
    left: highlightLines(left.code, languageFor(left.language, left.code)),
    right: highlightLines(right.code, languageFor(right.language, right.code)),
  };
  const root = document.createElement("div");
  root.className = "diff";
  root.setAttribute("role", "table");
  const head = document.createElement("div");
  head.className = "diff-head";
  head.setAttribute("role", "row");
  for (const [side, title] of [["left", left.title], ["right", right.title]]) {
    const th = document.createElement("div");
    th.className = `side ${side}`;
    th.setAttribute("role", "columnheader");
    th.textContent = title;
    head.append(th);
  }
  root.append(head);
  const counts = { same: 0, changed: 0, removed: 0, added: 0 };
  for (const row of rows) {
    counts[row.kind] += 1;
    const node = document.createElement("div");
    node.className = "diff-row";
    node.dataset.kind = row.kind;
    node.setAttribute("role", "row");
    const a = cell("left", row, lit.left);
    const b = cell("right", row, lit.right);
    if (row.kind === "changed") {
      const ranges = wordRanges(row.left.text, row.right.text);
      markRanges(a.querySelector("code"), ranges.left);
      markRanges(b.querySelector("code"), ranges.right);
    }
    node.append(a, b);
    root.append(node);
  }
  return { root, counts };
}
