-- Full-text search over events (`GET /api/events?q=…`): a document generated from the summary
-- (weight A), the object types and zones (B) and the reasoning (C), stemmed in English, and its
-- GIN index. PostgreSQL computes it on every insert and update, so the projector never writes it
-- and a replay rebuilds it with the rows. `projections.tables.search_document` is the same
-- expression for the queries; array_to_tsvector(...)::text spells the arrays as words with
-- immutable functions only (array_to_string is merely stable, which a generated column refuses).
ALTER TABLE events ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english'::regconfig, coalesce(summary, '')), 'A')
    || setweight(to_tsvector('english'::regconfig,
        array_to_tsvector(array_remove(array_remove(object_types || zones, NULL), ''))::text), 'B')
    || setweight(to_tsvector('english'::regconfig, coalesce(reasoning, '')), 'C')
) STORED;
CREATE INDEX events_search_idx ON events USING gin (search);
