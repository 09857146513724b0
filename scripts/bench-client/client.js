// The benchmark's WebSocket load generator (scripts/bench.py runs it, pinned to
// its own core). Node's `ws` reads frames ~3x faster than a Python client, so
// the server, not the reader, is what a run measures.
//
//   node client.js '{"port": 8765, "paths": ["/ws/orchestrate/a", ...], "expect": 20, "count": "seq"}'
//
// Opens one connection per path (200 handshakes at a time), prints {"ready": n},
// then counts frames on each connection until it has `expect` of them (`count`:
// "thought" counts thought_added frames, "seq" every frame with a seq, "job"
// every frame until the job's final status) and prints
// {"result": {...}}: frames received, the last receive time (Unix seconds), seq
// order errors (a seq that is not the previous one + 1), p50/p99 latency in ms
// and this process's CPU time (user + system) from ready to done, in seconds.
// Latency: a thought whose text starts with a Unix time stamp (the benchmark's
// own thoughts) is measured from it; any other frame from its "timestamp".
"use strict";
const WebSocket = require("ws");

const args = JSON.parse(process.argv[2]);
const countAll = args.count !== "thought";
// "job": every frame with a seq, until the job's last one (its final status).
const untilFinal = args.count === "job";
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const now = () => (performance.timeOrigin + performance.now()) / 1000;
const latencies = [];
let received = 0;
let orderErrors = 0;
let last = 0;
let open = 0;
let finished = 0;
let cpuStart = null;

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function quantile(sorted, q) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function done() {
  finished += 1;
  if (finished < args.paths.length) return;
  const cpu = process.cpuUsage(cpuStart);
  const sorted = Float64Array.from(latencies).sort();
  print({
    result: {
      received, last, order_errors: orderErrors,
      p50_ms: quantile(sorted, 0.5) * 1000, p99_ms: quantile(sorted, 0.99) * 1000,
      cpu_s: (cpu.user + cpu.system) / 1e6,
    },
  });
  process.exit(0);
}

function connect(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${args.port}${path}`, { perMessageDeflate: false });
    let greeted = false;
    let prev = -1;
    let mine = 0;
    ws.on("message", (data) => {
      const t = now();
      if (mine === Infinity) return;  // done: terminated
      if (!greeted) { greeted = true; resolve(ws); return; }
      const frame = JSON.parse(data);
      if (frame.seq === undefined) return;
      if (prev >= 0 && frame.seq !== prev + 1) orderErrors += 1;
      prev = frame.seq;
      const thought = frame.type === "thought_added";
      if (!countAll && !thought) return;
      const text = thought && frame.data ? frame.data.text || frame.data.thought || "" : "";
      const stamp = /^\d{10}\.\d{6} #/.test(text) ? parseFloat(text) : Date.parse(frame.timestamp) / 1000;
      latencies.push(t - stamp);
      received += 1;
      mine += 1;
      last = t;
      const final = untilFinal && frame.type === "status_change" && !frame.team
        && frame.data && FINAL.has(frame.data.status);
      if (mine === args.expect || final) { ws.terminate(); mine = Infinity; done(); }
    });
    ws.on("error", (err) => { if (!greeted) reject(err); else { console.error(String(err)); process.exit(2); } });
    ws.on("close", (code) => {
      if (mine !== Infinity) { console.error(`${path}: closed early (${code}) after ${mine}`); process.exit(3); }
    });
  });
}

async function main() {
  const batch = 200;
  for (let i = 0; i < args.paths.length; i += batch) {
    await Promise.all(args.paths.slice(i, i + batch).map(connect));
    open = Math.min(args.paths.length, i + batch);
  }
  cpuStart = process.cpuUsage();
  print({ ready: open });
}

main().catch((err) => { console.error(String(err)); process.exit(1); });
