PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- creation order, the ListJobs cursor
    job_id TEXT NOT NULL UNIQUE,
    request_id TEXT UNIQUE,                 -- NULL when the client gave none
    state TEXT NOT NULL,
    end_time TEXT,                          -- end_time_key(): microseconds, for retention
    snapshot TEXT NOT NULL DEFAULT '',      -- schema 1 only (the job as JSON); '' since
    owner TEXT NOT NULL DEFAULT '',         -- the creating token's sub
    brief TEXT NOT NULL DEFAULT '',
    create_time TEXT NOT NULL DEFAULT '',   -- iso_timestamp(), as the snapshot shows it
    update_time TEXT NOT NULL DEFAULT '',
    last_sequence INTEGER NOT NULL DEFAULT 0
);
INSERT INTO jobs VALUES(1,'old-job',NULL,'succeeded','2026-11-25T23:35:26.549306+00:00','','','a counter','2026-11-25T23:35:26.537Z','2026-11-25T23:35:26.549Z',9);
CREATE TABLE teams (
    job_id TEXT NOT NULL,
    position INTEGER NOT NULL,              -- the order the job lists its teams in
    team TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT NOT NULL,
    code TEXT NOT NULL,
    language TEXT NOT NULL,
    token_count INTEGER NOT NULL,
    error TEXT NOT NULL,
    thought_count INTEGER NOT NULL,
    PRIMARY KEY (job_id, team)
) WITHOUT ROWID;
INSERT INTO teams VALUES('old-job',0,'anthropic','complete','simulated',replace('import { useState } from ''react'';\n\nexport function Counter({ initial = 0 }: { initial?: number }) {\n  const [count, setCount] = useState(initial);\n  return (\n    <div>\n      <output aria-live="polite">{count}</output>\n      <button onClick={() => setCount((c) => c - 1)}>−</button>\n      <button onClick={() => setCount((c) => c + 1)}>+</button>\n      <button onClick={() => setCount(initial)}>Reset</button>\n    </div>\n  );\n}\n','\n',char(10)),'tsx',106,'',3);
CREATE TABLE events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    frame TEXT NOT NULL,                    -- the exact WebSocket text
    thought TEXT,                           -- the team of a thought_added event, else NULL
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
INSERT INTO events VALUES('old-job',1,'{"type":"status_change","data":{"status":"running"},"timestamp":"2026-11-25T23:35:26.539Z","job_id":"old-job","seq":1}',NULL);
INSERT INTO events VALUES('old-job',2,'{"type":"status_change","team":"anthropic","data":{"status":"thinking","model":"simulated"},"timestamp":"2026-11-25T23:35:26.539Z","job_id":"old-job","seq":2}',NULL);
INSERT INTO events VALUES('old-job',3,'{"type":"thought_added","team":"anthropic","data":{"thought":"Reading the brief: “a counter”. This calls for a Counter component."},"timestamp":"2026-11-25T23:35:26.543Z","job_id":"old-job","seq":3}','anthropic');
INSERT INTO events VALUES('old-job',4,'{"type":"thought_added","team":"anthropic","data":{"thought":"One number in state, with buttons to increment, decrement and reset."},"timestamp":"2026-11-25T23:35:26.543Z","job_id":"old-job","seq":4}','anthropic');
INSERT INTO events VALUES('old-job',5,'{"type":"thought_added","team":"anthropic","data":{"thought":"React with TypeScript, function components and hooks; no outside libraries."},"timestamp":"2026-11-25T23:35:26.544Z","job_id":"old-job","seq":5}','anthropic');
INSERT INTO events VALUES('old-job',6,'{"type":"status_change","team":"anthropic","data":{"status":"generating"},"timestamp":"2026-11-25T23:35:26.544Z","job_id":"old-job","seq":6}',NULL);
INSERT INTO events VALUES('old-job',7,'{"type":"code_generated","team":"anthropic","data":{"code":"import { useState } from ''react'';\n\nexport function Counter({ initial = 0 }: { initial?: number }) {\n  const [count, setCount] = useState(initial);\n  return (\n    <div>\n      <output aria-live=\"polite\">{count}</output>\n      <button onClick={() => setCount((c) => c - 1)}>−</button>\n      <button onClick={() => setCount((c) => c + 1)}>+</button>\n      <button onClick={() => setCount(initial)}>Reset</button>\n    </div>\n  );\n}\n","language":"tsx","token_count":106},"timestamp":"2026-11-25T23:35:26.544Z","job_id":"old-job","seq":7}',NULL);
INSERT INTO events VALUES('old-job',8,'{"type":"status_change","team":"anthropic","data":{"status":"complete"},"timestamp":"2026-11-25T23:35:26.544Z","job_id":"old-job","seq":8}',NULL);
INSERT INTO events VALUES('old-job',9,'{"type":"status_change","data":{"status":"succeeded"},"timestamp":"2026-11-25T23:35:26.549Z","job_id":"old-job","seq":9}',NULL);
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('jobs',1);
CREATE INDEX jobs_state ON jobs(state);
CREATE INDEX jobs_end_time ON jobs(end_time);
CREATE INDEX jobs_owner ON jobs(owner, id);
CREATE INDEX events_thoughts ON events(job_id, thought, seq) WHERE thought IS NOT NULL;
COMMIT;
PRAGMA user_version=2;
