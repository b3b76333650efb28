-- Re-analysis (`hsi reanalyze`): every judgement of an event, the runs that replay history
-- through a candidate analyzer, and their results beside the judgement current when they ran.
CREATE TABLE analysis_history (
    camera_id text NOT NULL,
    entry_id text NOT NULL,
    event_id uuid NOT NULL,
    status text NOT NULL,
    risk_score integer,
    risk_level text,
    summary text,
    analyzer text NOT NULL,
    model text,
    prompt_hash text,
    supersedes text,
    run_id text,
    analyzed_at timestamptz NOT NULL,
    PRIMARY KEY (camera_id, entry_id)
);
CREATE INDEX analysis_history_event_idx ON analysis_history (event_id, analyzed_at);

CREATE TABLE reanalysis_runs (
    id text PRIMARY KEY,
    analyzer text,
    model text,
    config_hash text,
    selection text,
    max_tokens bigint,
    started_at timestamptz,
    cameras integer NOT NULL DEFAULT 0,
    cameras_completed integer NOT NULL DEFAULT 0,
    cameras_cancelled integer NOT NULL DEFAULT 0,
    cameras_over_budget integer NOT NULL DEFAULT 0,
    ended_at timestamptz,
    analyzed integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    latency_us bigint NOT NULL DEFAULT 0,
    adopted integer NOT NULL DEFAULT 0,
    adopted_at timestamptz
);
CREATE INDEX reanalysis_runs_started_idx ON reanalysis_runs (started_at DESC, id);

CREATE TABLE reanalysis_results (
    run_id text NOT NULL,
    event_id uuid NOT NULL,
    camera_id text NOT NULL,
    entry_id text NOT NULL,
    batch_entry_id text NOT NULL,
    status text NOT NULL,
    current_entry_id text,
    current_score integer,
    current_level text,
    risk_score integer,
    risk_level text,
    summary text,
    reasoning text,
    error text,
    prompt_tokens integer,
    completion_tokens integer,
    latency_ms real,
    analyzed_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, event_id)
);
CREATE INDEX reanalysis_results_event_idx ON reanalysis_results (event_id);
