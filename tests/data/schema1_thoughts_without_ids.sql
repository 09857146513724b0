PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- creation order, the ListJobs cursor
    job_id TEXT NOT NULL UNIQUE,
    request_id TEXT UNIQUE,                 -- NULL when the client gave none
    state TEXT NOT NULL,
    end_time TEXT,
    snapshot TEXT NOT NULL                  -- chimera.job.Job as JSON
, owner TEXT NOT NULL DEFAULT '');
INSERT INTO jobs VALUES(1,'old-job',NULL,'succeeded','2026-11-25T23:35:25.505794+00:00','{"job_id":"old-job","brief":"a counter","state":"succeeded","teams":[{"team":"anthropic","status":"complete","model":"simulated","thoughts":["Reading the brief: “a counter”. This calls for a Counter component.","One number in state, with buttons to increment, decrement and reset.","React with TypeScript, function components and hooks; no outside libraries."],"code":"import { useState } from ''react'';\n\nexport function Counter({ initial = 0 }: { initial?: number }) {\n  const [count, setCount] = useState(initial);\n  return (\n    <div>\n      <output aria-live=\"polite\">{count}</output>\n      <button onClick={() => setCount((c) => c - 1)}>−</button>\n      <button onClick={() => setCount((c) => c + 1)}>+</button>\n      <button onClick={() => setCount(initial)}>Reset</button>\n    </div>\n  );\n}\n","language":"tsx","token_count":106,"error":""}],"create_time":"2026-11-25T23:35:25.504Z","update_time":"2026-11-25T23:35:25.505Z","end_time":"2026-11-25T23:35:25.505Z","last_sequence":9,"request_id":"","owner":""}','');
CREATE TABLE events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    frame TEXT NOT NULL,                    -- the exact WebSocket text
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
INSERT INTO events VALUES('old-job',1,'{"type":"status_change","data":{"status":"running"},"timestamp":"2026-11-25T23:35:25.505Z","job_id":"old-job","seq":1}');
INSERT INTO events VALUES('old-job',2,'{"type":"status_change","team":"anthropic","data":{"status":"thinking","model":"simulated"},"timestamp":"2026-11-25T23:35:25.505Z","job_id":"old-job","seq":2}');
INSERT INTO events VALUES('old-job',3,'{"type":"thought_added","team":"anthropic","data":{"thought":"Reading the brief: “a counter”. This calls for a Counter component."},"timestamp":"2026-11-25T23:35:25.505Z","job_id":"old-job","seq":3}');
INSERT INTO events VALUES('old-job',4,'{"type":"thought_added","team":"anthropic","data":{"thought":"One number in state, with buttons to increment, decrement and reset."},"timestamp":"2026-11-25T23:35:25.505Z","job_id":"old-job","seq":4}');
INSERT INTO events VALUES('old-job',5,'{"type":"thought_added","team":"anthropic","data":{"thought":"React with TypeScript, function components and hooks; no outside libraries."},"timestamp":"2026-11-25T23:35:25.505Z","job_id":"old-job","seq":5}');
INSERT INTO events VALUES('old-job',6,'{"type":"status_change","team":"anthropic","data":{"status":"generating"},"timestamp":"2026-11-25T23:35:25.505Z","job_id":"old-job","seq":6}');
INSERT INTO events VALUES('old-job',7,'{"type":"code_generated","team":"anthropic","data":{"code":"import { useState } from ''react'';\n\nexport function Counter({ initial = 0 }: { initial?: number }) {\n  const [count, setCount] = useState(initial);\n  return (\n    <div>\n      <output aria-live=\"polite\">{count}</output>\n      <button onClick={() => setCount((c) => c - 1)}>−</button>\n      <button onClick={() => setCount((c) => c + 1)}>+</button>\n      <button onClick={() => setCount(initial)}>Reset</button>\n    </div>\n  );\n}\n","language":"tsx","token_count":106},"timestamp":"2026-11-25T23:35:25.505Z","job_id":"old-job","seq":7}');
INSERT INTO events VALUES('old-job',8,'{"type":"status_change","team":"anthropic","data":{"status":"complete"},"timestamp":"2026-11-25T23:35:25.505Z","job_id":"old-job","seq":8}');
INSERT INTO events VALUES('old-job',9,'{"type":"status_change","data":{"status":"succeeded"},"timestamp":"2026-11-25T23:35:25.505Z","job_id":"old-job","seq":9}');
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('jobs',1);
CREATE INDEX jobs_state ON jobs(state);
CREATE INDEX jobs_end_time ON jobs(end_time);
CREATE INDEX jobs_owner ON jobs(owner, id);
COMMIT;
