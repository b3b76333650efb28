-- Log records written by HSI's PostgreSQL log handler (LOG_DB_ENABLED=true).
CREATE TABLE logs (
    id          bigserial PRIMARY KEY,
    created_at  timestamptz NOT NULL,
    level       text        NOT NULL,
    logger      text        NOT NULL,
    message     text        NOT NULL,
    context     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    request_id  text,
    trace_id    text,
    exception   text
);
CREATE INDEX logs_created_at_idx ON logs (created_at DESC);
CREATE INDEX logs_level_created_at_idx ON logs (level, created_at DESC);
