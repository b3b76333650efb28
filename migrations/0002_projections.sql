-- The read side: tables materialized from the streams by the projectors (group `project`).
--
-- Every row is keyed by something derived from its entry (camera id, entry id, batch id), never
-- by a sequence, so a rebuild from the streams yields the same rows as the live projection.
-- Entries of different streams of a camera may be projected in any order (a detection before its
-- file, an analysis before its batch): rows are upserted column-wise and carry no foreign keys
-- across streams.

CREATE TABLE cameras (
    id              text        PRIMARY KEY,
    name            text        NOT NULL,
    folder          text        NOT NULL,
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    file_count      integer     NOT NULL DEFAULT 0,
    event_count     integer     NOT NULL DEFAULT 0,
    last_event_at   timestamptz,
    status          text        NOT NULL DEFAULT 'active'
);

-- One row per `file.observed`; the detection columns are filled by `detection.completed/failed`.
CREATE TABLE media_files (
    id               uuid        PRIMARY KEY,          -- uuid5(camera_id, file entry id)
    camera_id        text        NOT NULL,
    entry_id         text        NOT NULL,             -- the file.observed entry id
    path             text,                             -- relative to the camera root
    sha256           text,
    size             bigint,
    mime             text,
    media_kind       text,
    captured_at      timestamptz,
    capture_source   text,
    observed_at      timestamptz,
    detection_status text        NOT NULL DEFAULT 'pending',  -- pending | completed | failed
    detection_error  text,
    detector         text,
    image_width      integer,
    image_height     integer,
    object_count     integer,
    detected_at      timestamptz,
    UNIQUE (camera_id, entry_id)
);
CREATE INDEX media_files_camera_captured_idx ON media_files (camera_id, captured_at DESC);
CREATE INDEX media_files_captured_idx ON media_files (captured_at DESC);

-- One row per detected object of a `detection.completed`.
CREATE TABLE detections (
    id                 uuid        PRIMARY KEY,        -- uuid5(camera_id, detection entry id, index)
    camera_id          text        NOT NULL,
    detection_entry_id text        NOT NULL,
    object_index       integer     NOT NULL,
    file_id            uuid        NOT NULL,           -- media_files.id
    file_entry_id      text        NOT NULL,
    path               text        NOT NULL,
    label              text        NOT NULL,
    confidence         real        NOT NULL,
    bbox_x             real        NOT NULL,
    bbox_y             real        NOT NULL,
    bbox_width         real        NOT NULL,
    bbox_height        real        NOT NULL,
    image_width        integer     NOT NULL,
    image_height       integer     NOT NULL,
    detector           text        NOT NULL,
    captured_at        timestamptz NOT NULL,
    UNIQUE (camera_id, detection_entry_id, object_index)
);
CREATE INDEX detections_captured_idx ON detections (captured_at DESC, id DESC);
CREATE INDEX detections_camera_captured_idx ON detections (camera_id, captured_at DESC, id DESC);
CREATE INDEX detections_label_captured_idx ON detections (label, captured_at DESC, id DESC);
CREATE INDEX detections_file_idx ON detections (file_id);

-- One row per `batch.closed`; the analysis columns are filled by `analysis.completed/failed`.
CREATE TABLE events (
    id                  uuid        PRIMARY KEY,       -- the batch id
    camera_id           text        NOT NULL,
    batch_entry_id      text,
    window_start        timestamptz,
    window_end          timestamptz,
    close_reason        text,
    detection_count     integer,
    object_types        text[]      NOT NULL DEFAULT '{}',
    max_confidence      real,
    fast_path           boolean,
    closed_at           timestamptz,
    analysis_status     text        NOT NULL DEFAULT 'pending',  -- pending | completed | failed
    analysis_entry_id   text,
    risk_score          integer,
    risk_level          text,
    summary             text,
    reasoning           text,
    analyzer            text,
    model               text,
    prompt_hash         text,
    analysis_latency_ms real,
    analysis_error      text,
    analyzed_at         timestamptz
);
CREATE INDEX events_window_idx ON events (window_start DESC, id DESC);
CREATE INDEX events_camera_window_idx ON events (camera_id, window_start DESC, id DESC);
CREATE INDEX events_level_window_idx ON events (risk_level, window_start DESC, id DESC);
CREATE INDEX events_score_idx ON events (risk_score);
CREATE INDEX events_object_types_idx ON events USING gin (object_types);

-- The detections entries (files) of each event, in batch order.
CREATE TABLE event_detections (
    event_id           uuid    NOT NULL,
    detection_entry_id text    NOT NULL,
    file_entry_id      text    NOT NULL,
    camera_id          text    NOT NULL,
    position           integer NOT NULL,
    PRIMARY KEY (event_id, detection_entry_id)
);
CREATE INDEX event_detections_detection_idx ON event_detections (camera_id, detection_entry_id);

-- One row per `entry.dead`.
CREATE TABLE dead_letters (
    camera_id     text        NOT NULL,
    dead_entry_id text        NOT NULL,                -- the entry id on the dead stream
    source_stream text        NOT NULL,
    entry_id      text        NOT NULL,
    group_name    text        NOT NULL,
    deliveries    integer     NOT NULL,
    last_error    text        NOT NULL,
    original_type text,
    dead_at       timestamptz NOT NULL,
    PRIMARY KEY (camera_id, dead_entry_id)
);
CREATE INDEX dead_letters_dead_at_idx ON dead_letters (dead_at DESC);

-- Which entries each projection has applied, written in the same transaction as the rows.
CREATE TABLE projection_checkpoints (
    projection text        NOT NULL,
    stream     text        NOT NULL,
    entry_id   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream, entry_id)
);
