-- Strata schema version 2: indexes for filtered `$all` reads and for listing categories.
-- `{schema}` is replaced by the configured schema name before this runs. `IF NOT EXISTS`, so a
-- schema where an operator already built them (for example with CREATE INDEX CONCURRENTLY,
-- ahead of the upgrade, to avoid blocking appends while they are built) takes this as is.

-- A filtered read of one category walks this index from its cursor, in position order: its
-- cost follows the category's events, not the whole table's.
CREATE INDEX IF NOT EXISTS events_category_position ON {schema}.events (aggregate_type, position);

-- The same for event types.
CREATE INDEX IF NOT EXISTS events_type_position ON {schema}.events (event_type, position);

-- One entry per stream (its first event), by category: listing categories skips from one
-- category to the next, and finds a category's streams, without reading the events table.
CREATE INDEX IF NOT EXISTS events_stream_starts ON {schema}.events (aggregate_type, aggregate_id)
    WHERE version = 0;
