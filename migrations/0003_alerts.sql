-- Alerts: one row per `alert.sent` / `alert.failed` fact on the cameras' alerts streams
-- (written by the notify stage, projected by group `project` like every other stream).
--
-- The id is derived from the entry (uuid5 of camera and alert entry id), so a rebuild from the
-- streams yields the same rows. `event_id` is the event's id (`events.id`, the batch id); no
-- foreign key, as everywhere on the read side (an alert may be projected before its event).

CREATE TABLE alerts (
    id                uuid        PRIMARY KEY,        -- uuid5(camera_id, alert entry id)
    camera_id         text        NOT NULL,
    entry_id          text        NOT NULL,           -- the alert entry's id on the alerts stream
    event_id          uuid        NOT NULL,           -- events.id
    analysis_entry_id text        NOT NULL,
    rule              text        NOT NULL,
    channel           text        NOT NULL,           -- webhook | email | mqtt
    status            text        NOT NULL,           -- sent | failed
    reason            text,                           -- failed: delivery_error | outcome_unknown
    attempt           integer     NOT NULL,
    error             text,
    idempotency_key   text        NOT NULL,
    delivered_at      timestamptz,                    -- sent: when the channel confirmed
    recorded_at       timestamptz NOT NULL,           -- when the outcome was known (sent or failed)
    UNIQUE (camera_id, entry_id)
);
CREATE INDEX alerts_recorded_idx ON alerts (recorded_at DESC, id DESC);
CREATE INDEX alerts_camera_recorded_idx ON alerts (camera_id, recorded_at DESC, id DESC);
CREATE INDEX alerts_event_idx ON alerts (event_id, recorded_at DESC);
