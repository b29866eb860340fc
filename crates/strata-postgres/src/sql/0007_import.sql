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

-- A payload as jsonb, or NULL when jsonb cannot hold it (a number out of its range): what an
-- import that failed on such a payload stores, row by row, so that the batch's other JSON
-- events (a metastream's, whose jsonb the append's checks read) keep theirs.
CREATE OR REPLACE FUNCTION {schema}.strata_jsonb_or_null(p_data BYTEA) RETURNS JSONB
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN convert_from(p_data, 'UTF8')::JSONB;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$fn$;

-- Inserts events that keep their positions, versions, ids and times (a restore from an
-- archive), in position order, right after the positions taken so far: p_after is the last
-- position the caller knows taken (NULL: none, the store is empty), so a position taken by
-- anyone else meanwhile (an append during a restore) fails the batch instead of landing inside
-- the restored history. The transaction's id is taken and the rows inserted in the critical
-- section, under the append's advisory lock, so the ordering proof (docs/guarantees.md) holds
-- for imported rows as for appended ones; only then are the position sequence and the
-- recorded_at clock moved to the last imported event (an append afterwards goes after it). A
-- batch that fails (a payload jsonb cannot hold, say) changes neither: the caller releases
-- the lock (pg_advisory_unlock_all, as after a failed append) and may try again.
--
-- SX001: the transaction has written already (as for strata_append); SX003: the positions
-- taken are not what p_after says. p_lenient: payloads jsonb cannot hold get a NULL `data`
-- (their bytes are kept), one by one, instead of failing the batch.
CREATE OR REPLACE FUNCTION {schema}.strata_import(
    p_after         BIGINT,
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
    p_recorded_us   BIGINT[],
    p_lenient       BOOLEAN)
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
    IF v_called IS DISTINCT FROM (p_after IS NOT NULL)
       OR (v_called AND v_last <> p_after)
       OR p_positions[1] <= coalesce(p_after, -1) THEN
        PERFORM pg_advisory_unlock({lock_key});
        RAISE EXCEPTION 'import at position % refused: positions up to % are taken',
            p_positions[1], CASE WHEN v_called THEN v_last END USING ERRCODE = 'SX003';
    END IF;
    v_xid := pg_current_xact_id();
    PERFORM set_config('strata.append', '{schema}', true);
    INSERT INTO {schema}.events (position, event_id, aggregate_id, aggregate_type, event_type,
        version, data, metadata, created_at, transaction_id, content_type, data_bytes)
    SELECT x.p, x.id, x.s, x.cat, x.t, x.v,
        CASE WHEN NOT x.j THEN NULL
             WHEN p_lenient THEN {schema}.strata_jsonb_or_null(x.d)
             ELSE convert_from(x.d, 'UTF8')::JSONB END,
        x.m::JSONB, 'epoch'::TIMESTAMPTZ + x.us * INTERVAL '1 microsecond', v_xid, x.c, x.d
    FROM unnest(p_positions, p_ids, p_streams, p_categories, p_types, p_versions,
                p_content_types, p_json, p_data, p_metadata, p_recorded_us)
         AS x(p, id, s, cat, t, v, c, j, d, m, us)
    ORDER BY x.p;
    PERFORM set_config('strata.append', '', true);
    SELECT c.last_value INTO v_clock FROM {schema}.recorded_at_clock c;
    PERFORM setval('{schema}.events_position_seq', p_positions[v_n]),
            setval('{schema}.recorded_at_clock', greatest(v_clock, p_recorded_us[v_n])),
            pg_advisory_unlock({lock_key});
END
$fn$;

-- After a restore's last batch: moves the position sequence so that the next append goes to
-- p_position, when p_after is still the last position taken (NULL: none is). False, and
-- nothing changed, when anyone else took a position since. The append lock is taken for the
-- statement's transaction only (it conflicts with the appends' session lock on the same key),
-- so that a caller that goes away, or an error, cannot leave it held on a pooled connection.
CREATE OR REPLACE FUNCTION {schema}.strata_skip_positions(p_after BIGINT, p_position BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql AS $fn$
DECLARE
    v_last   BIGINT;
    v_called BOOLEAN;
BEGIN
    PERFORM pg_advisory_xact_lock({lock_key});
    SELECT s.last_value, s.is_called INTO v_last, v_called FROM {schema}.events_position_seq s;
    IF v_called IS DISTINCT FROM (p_after IS NOT NULL) OR (v_called AND v_last <> p_after) THEN
        RETURN false;
    END IF;
    IF p_position > coalesce(p_after + 1, 0) THEN
        PERFORM setval('{schema}.events_position_seq', p_position - 1);
    END IF;
    RETURN true;
END
$fn$;
