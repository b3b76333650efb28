-- Zones (`streams.zones`): the tagging zones each detected object stood in, and their union per
-- event, so that events can be filtered by zone (`GET /api/events?zone=porch`).
ALTER TABLE detections ADD COLUMN zones text[] NOT NULL DEFAULT '{}';
ALTER TABLE events ADD COLUMN zones text[] NOT NULL DEFAULT '{}';
CREATE INDEX events_zones_idx ON events USING gin (zones);
