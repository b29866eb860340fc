-- Strata schema version 7: the store's id, for archives, and the import of archived events
-- (docs/lifecycle.md, "Archiving and restoring"). `{schema}` is replaced by the configured
-- schema name before this runs.

-- Written to run again over itself (as every migration from version 4 is).
--
-- The store's id: 16 hex digits, chosen when the schema is made. An archive names the store
-- whose events it holds; a store restored from an archive takes the archive's id, so that it
-- goes on archiving there.
CREATE TABLE IF NOT EXISTS {schema}.strata_store (
    one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    id  TEXT NOT NULL CHECK (id ~ '^[0-9a-f]{16}$')
);
INSERT INTO {schema}.strata_store (id)
    SELECT substr(replace(gen_random_uuid()::text, '-', ''), 1, 16)
     WHERE NOT EXISTS (SELECT 1 FROM {schema}.strata_store);

-- Inserts events that keep their positions, versions, ids and times (a restore from an
-- archive), in position order, past every position taken so far. Positions are taken as an
-- append takes them: in the critical section, under the append's advisory lock, together with
-- this transaction's id, so the ordering proof (docs/guarantees.md) holds for imported rows as
-- for appended ones. The position sequence and the recorded_at clock are moved to the last
-- imported event: an append afterwards goes after it.
--
-- SX001: the transaction has written already (as for strata_append); SX003: a position is not
-- past those taken before (the store is not empty, or the batches came out of order).
CREATE OR REPLACE FUNCTION {schema}.strata_import(
    p_positions     BIGINT[],
    p_ids           UUID[],
    p_streams       TEXT[],
    p_categories    TEXT[],
    p_types         TEXT[],
    p_versions      BIGINT[],
    p_content_types TEXT[],
    p_json          BOOLEAN[],
    p_data          BYTEA[],
    p_metadata      TEXT[],
    p_recorded_us   BIGINT[])
RETURNS VOID LANGUAGE plpgsql AS $fn$
DECLARE
    v_n      INT := cardinality(p_positions);
    v_xid    XID8;
    v_last   BIGINT;
    v_called BOOLEAN;
    v_clock  BIGINT;
BEGIN
    IF v_n = 0 THEN
        RETURN;
    END IF;
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'strata_import must run in a transaction that has not written yet'
            USING ERRCODE = 'SX001';
    END IF;
    PERFORM pg_advisory_lock({lock_key});
    SELECT s.last_value, s.is_called INTO v_last, v_called FROM {schema}.events_position_seq s;
    IF v_called AND v_last >= p_positions[1] THEN
        PERFORM pg_advisory_unlock({lock_key});
        RAISE EXCEPTION 'import at position % refused: positions up to % are taken',
            p_positions[1], v_last USING ERRCODE = 'SX003';
    END IF;
    v_xid := pg_current_xact_id();
    SELECT c.last_value INTO v_clock FROM {schema}.recorded_at_clock c;
    PERFORM setval('{schema}.events_position_seq', p_positions[v_n]),
            setval('{schema}.recorded_at_clock', greatest(v_clock, p_recorded_us[v_n])),
            pg_advisory_unlock({lock_key});
    PERFORM set_config('strata.append', '{schema}', true);
    INSERT INTO {schema}.events (position, event_id, aggregate_id, aggregate_type, event_type,
        version, data, metadata, created_at, transaction_id, content_type, data_bytes)
    SELECT x.p, x.id, x.s, x.cat, x.t, x.v,
        CASE WHEN x.j THEN convert_from(x.d, 'UTF8')::JSONB END,
        x.m::JSONB, 'epoch'::TIMESTAMPTZ + x.us * INTERVAL '1 microsecond', v_xid, x.c, x.d
    FROM unnest(p_positions, p_ids, p_streams, p_categories, p_types, p_versions,
                p_content_types, p_json, p_data, p_metadata, p_recorded_us)
         AS x(p, id, s, cat, t, v, c, j, d, m, us)
    ORDER BY x.p;
    PERFORM set_config('strata.append', '', true);
END
$fn$;
