-- Strata schema version 6: strata_append reads the soft-delete state of a batch's streams in
-- one statement, and not at all while the store has no metastream. `{schema}` is replaced by
-- the configured schema name before this runs.
--
-- Version 5 read each append's metastream in a statement of its own: a batch of 64 appends
-- with expected versions ran 64 more statements, which cost concurrent single-event appends
-- 6-15% (docs/benchmarks.md, "What the stream lifecycle checks cost"). Nothing else changes.

CREATE OR REPLACE FUNCTION {schema}.strata_append(
    p_streams        TEXT[],      -- per append
    p_categories     TEXT[],
    p_expected_kinds SMALLINT[],  -- 0 any, 1 no stream, 2 stream exists, 3 exact
    p_expected       BIGINT[],
    p_counts         INT[],
    p_event_append   INT[],       -- per event: the 1-based index of its append
    p_event_index    INT[],       -- per event: its 0-based index within its append
    p_ids            UUID[],
    p_types          TEXT[],
    p_content_types  TEXT[],
    p_json           BOOLEAN[],   -- also store the payload as JSONB in `data`
    p_data           BYTEA[],
    p_metadata       TEXT[],      -- NULL when empty
    OUT o_status SMALLINT[], OUT o_stream_version BIGINT[], OUT o_first_position BIGINT[],
    OUT o_conflict_id UUID[], OUT o_positions BIGINT[], OUT o_xid BIGINT)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_appends   INT := cardinality(p_streams);
    v_events    INT := cardinality(p_ids);
    v_first     BIGINT;
    v_xid       XID8;
    v_us        BIGINT;
    v_at        TIMESTAMPTZ;
    v_base      BIGINT[] := array_fill(NULL::BIGINT, ARRAY[v_appends]);
    v_start     INT[] := array_fill(NULL::INT, ARRAY[v_appends]);
    v_accepted  INT := 0;
    v_offset    INT := 1;
    v_count     INT;
    v_stream    TEXT;
    v_cur       BIGINT;
    v_known     BOOLEAN := false;
    v_prev      TEXT := NULL;
    v_prev_ver  BIGINT;
    v_f_stream  TEXT;
    v_f_version BIGINT;
    v_kind      SMALLINT;
    v_ok        BOOLEAN;
    v_used      UUID;
    v_positions BIGINT[];
    v_row       RECORD;
    v_conflict  UUID;
    v_tomb      BOOLEAN;
    v_prev_tomb BOOLEAN := false;
    v_tb        BIGINT;
    v_deleted   BOOLEAN;
    v_tbs       BIGINT[];
BEGIN
    o_status := array_fill(NULL::SMALLINT, ARRAY[v_appends]);
    o_stream_version := array_fill(NULL::BIGINT, ARRAY[v_appends]);
    o_first_position := array_fill(NULL::BIGINT, ARRAY[v_appends]);
    o_conflict_id := array_fill(NULL::UUID, ARRAY[v_appends]);
    o_positions := ARRAY[]::BIGINT[];
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        -- The ordering proof needs this transaction's id to be assigned inside the critical
        -- section below; a transaction that already wrote something cannot append.
        RAISE EXCEPTION 'strata_append must run in a transaction that has not written yet'
            USING ERRCODE = 'SX001';
    END IF;
    -- A soft delete and an append to the stream must not both succeed on what each read
    -- before the other committed (their rows are in different streams, so no key conflict
    -- orders them). Every append takes the table in ROW EXCLUSIVE mode before its checks (as
    -- its INSERT would anyway; appends do not conflict with each other), and a batch holding a
    -- delete in SHARE ROW EXCLUSIVE, which waits for the appends in flight to end and makes
    -- new ones wait for it: each side's checks then see the other's commit. The one-statement
    -- append takes ROW EXCLUSIVE when it is planned, before its snapshot.
    IF '$streamDeleted' = ANY(p_types) THEN
        LOCK TABLE {schema}.events IN SHARE ROW EXCLUSIVE MODE;
    ELSE
        LOCK TABLE {schema}.events IN ROW EXCLUSIVE MODE;
    END IF;
    -- The truncateBefore of each append's stream (NULL without one, or for an append that
    -- expects `any`), for the soft-delete check below: one statement for the batch, and none
    -- while the store has no metastream (one probe of the (aggregate_id, version) index). A
    -- `$streamDeleted` is either committed before the lock above or waits for this
    -- transaction (a batch holding one takes the table in SHARE ROW EXCLUSIVE mode), and the
    -- client batches a metastream's append alone, so reading them here sees what reading
    -- them append by append would. Truncations and other metadata changes take no such lock,
    -- here as in version 5.
    IF EXISTS (SELECT 1 FROM {schema}.events x
                WHERE x.aggregate_id >= '$$' AND x.aggregate_id < '$%') THEN
        v_tbs := ARRAY(
            SELECT CASE WHEN p_expected_kinds[u.o] <> 0 THEN
                       (SELECT (m.data ->> 'truncateBefore')::BIGINT FROM {schema}.events m
                         WHERE m.aggregate_id = '$$' || u.s ORDER BY m.version DESC LIMIT 1)
                   END
              FROM unnest(p_streams) WITH ORDINALITY AS u(s, o)
             ORDER BY u.o);
    END IF;

    -- 1. Checks. Reads only.
    FOR i IN 1..v_appends LOOP
        v_count := p_counts[i];
        v_stream := p_streams[i];
        v_kind := p_expected_kinds[i];
        IF v_prev IS DISTINCT FROM v_stream THEN
            v_known := false;
            v_prev := v_stream;
        END IF;
        -- One statement looks up both the first id and (unless known) the stream's last
        -- event: its version, and whether it is the stream's tombstone.
        SELECT f.aggregate_id, f.version, l.version,
               l.event_type = '$streamTombstoned'
          INTO v_f_stream, v_f_version, v_cur, v_tomb
          FROM (SELECT 1) AS one
          LEFT JOIN {schema}.events f ON f.event_id = p_ids[v_offset]
          LEFT JOIN LATERAL (SELECT e.version, e.event_type FROM {schema}.events e
                              WHERE e.aggregate_id = v_stream AND NOT v_known
                              ORDER BY e.version DESC LIMIT 1) AS l ON true;
        IF v_f_stream IS NOT NULL THEN
            -- The first id is stored: a retry of an acknowledged append, or a conflict.
            v_conflict := NULL;
            v_positions := ARRAY[]::BIGINT[];
            -- A stream re-created after a soft delete starts where the deletion ended.
            IF v_f_stream <> v_stream
               OR (v_kind = 3 AND v_f_version <> p_expected[i] + 1)
               OR (v_kind = 1 AND v_f_version <> 0
                   AND v_f_version IS DISTINCT FROM (SELECT (m.data ->> 'truncateBefore')::BIGINT FROM {schema}.events m
                      WHERE m.aggregate_id = '$$' || v_stream ORDER BY m.version DESC LIMIT 1)) THEN
                v_conflict := p_ids[v_offset];
            ELSE
                FOR k IN 0..v_count - 1 LOOP
                    SELECT e.aggregate_id, e.version, e.event_type, e.data_bytes, e.position
                        INTO v_row FROM {schema}.events e WHERE e.event_id = p_ids[v_offset + k];
                    IF NOT FOUND THEN
                        v_conflict := p_ids[v_offset];
                        EXIT;
                    END IF;
                    IF v_row.aggregate_id <> v_stream OR v_row.version <> v_f_version + k
                       OR v_row.event_type <> p_types[v_offset + k]
                       OR v_row.data_bytes <> p_data[v_offset + k] THEN
                        v_conflict := p_ids[v_offset + k];
                        EXIT;
                    END IF;
                    v_positions := v_positions || v_row.position;
                END LOOP;
            END IF;
            IF v_conflict IS NULL THEN
                o_status[i] := 3;
                o_stream_version[i] := v_f_version + v_count - 1;
                o_positions := o_positions || v_positions;
            ELSE
                o_status[i] := 2;
                o_conflict_id[i] := v_conflict;
            END IF;
        ELSE
            IF v_known THEN
                v_cur := v_prev_ver;
                v_tomb := v_prev_tomb;
            ELSE
                v_known := true;
                v_prev_ver := v_cur;
                v_tomb := coalesce(v_tomb, false);
                v_prev_tomb := v_tomb;
            END IF;
            -- Whether the stream is soft-deleted (all its events below truncateBefore): then it
            -- exists for no expectation, and only `any` or `no stream` re-create it.
            v_deleted := false;
            IF v_kind <> 0 AND v_cur IS NOT NULL AND NOT v_tomb AND v_tbs IS NOT NULL THEN
                v_tb := v_tbs[i];
                v_deleted := v_tb IS NOT NULL AND v_tb > v_cur;
            END IF;
            v_ok := NOT v_tomb AND CASE
                WHEN v_deleted THEN v_kind = 1
                WHEN v_kind = 0 THEN true
                WHEN v_kind = 1 THEN v_cur IS NULL
                WHEN v_kind = 2 THEN v_cur IS NOT NULL
                ELSE v_cur IS NOT NULL AND v_cur = p_expected[i]
            END;
            -- A delete is decided on the stream's next version: refused (a wrong expected
            -- version of the metastream, which the caller reads again) once the stream moved.
            IF v_ok AND left(v_stream, 2) = '$$' AND p_types[v_offset] = '$streamDeleted' THEN
                v_ok := (convert_from(p_data[v_offset], 'UTF8')::JSONB ->> 'truncateBefore')::BIGINT
                    IS NOT DISTINCT FROM coalesce(
                        (SELECT d.version FROM {schema}.events d
                          WHERE d.aggregate_id = substr(v_stream, 3)
                          ORDER BY d.version DESC LIMIT 1), -1) + 1;
            END IF;
            IF v_tomb THEN
                o_status[i] := 4;
            ELSIF v_ok THEN
                v_base[i] := coalesce(v_cur, -1) + 1;
                v_start[i] := v_offset;
                v_prev_ver := v_base[i] + v_count - 1;
                v_prev_tomb := p_types[v_offset + v_count - 1] = '$streamTombstoned';
                o_status[i] := 0;
                o_stream_version[i] := v_prev_ver;
                v_accepted := v_accepted + 1;
            ELSE
                -- A reused id wins over a wrong version, as in every backend.
                SELECT x.id INTO v_used
                    FROM unnest(p_ids[v_offset:v_offset + v_count - 1]) WITH ORDINALITY AS x(id, o)
                    WHERE EXISTS (SELECT 1 FROM {schema}.events e WHERE e.event_id = x.id)
                    ORDER BY x.o LIMIT 1;
                IF FOUND THEN
                    o_status[i] := 2;
                    o_conflict_id[i] := v_used;
                ELSE
                    o_status[i] := 1;
                    o_stream_version[i] := CASE WHEN v_deleted THEN NULL ELSE v_cur END;
                END IF;
            END IF;
        END IF;
        v_offset := v_offset + v_count;
    END LOOP;

    IF v_accepted = 0 THEN
        RETURN;
    END IF;

    -- 2. The critical section: transaction id, positions and recorded_at are taken together
    -- under a session-level advisory lock that is released at once (not at commit), so for any
    -- two appending transactions, xid order = position order = recorded_at order. It holds no
    -- row lock and does no I/O; writers queue here for microseconds, never for a commit.
    --
    -- Two statements: the first takes the lock (the subquery `l`, which the lateral `r` depends
    -- on, so it runs first) and then the id, the first position and the time; the second
    -- records the time and the last position and releases the lock (left to right). If
    -- anything fails in between, the client releases the lock with pg_advisory_unlock_all()
    -- on the same connection before reusing it, and a closed connection releases it anyway.
    SELECT r.x, r.p, r.us INTO v_xid, v_first, v_us
      FROM (SELECT pg_advisory_lock({lock_key})::TEXT AS locked) AS l,
           LATERAL (SELECT l.locked, pg_current_xact_id() AS x,
                           nextval('{schema}.events_position_seq') AS p,
                           greatest((extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT,
                                    (SELECT c.last_value FROM {schema}.recorded_at_clock c))
                               AS us) AS r;
    PERFORM CASE WHEN v_events > 1
                THEN setval('{schema}.events_position_seq', v_first + v_events - 1) END,
            setval('{schema}.recorded_at_clock', v_us),
            pg_advisory_unlock({lock_key});
    v_at := 'epoch'::TIMESTAMPTZ + v_us * INTERVAL '1 microsecond';

    o_xid := v_xid::TEXT::BIGINT;
    FOR i IN 1..v_appends LOOP
        IF v_start[i] IS NOT NULL THEN
            o_first_position[i] := v_first + v_start[i] - 1;
        END IF;
    END LOOP;

    -- 3. The write, the one INSERT the append-only guard lets through: the setting is
    -- transaction-local, and cleared again at once so that nothing else this transaction does
    -- afterwards (inside a caller's transaction) can insert directly.
    PERFORM set_config('strata.append', '{schema}', true);
    INSERT INTO {schema}.events (position, event_id, aggregate_id, aggregate_type, event_type,
        version, data, metadata, created_at, transaction_id, content_type, data_bytes)
    SELECT v_first + x.o - 1, x.id, p_streams[x.a], p_categories[x.a], x.t,
        v_base[x.a] + x.k,
        CASE WHEN x.j THEN convert_from(x.d, 'UTF8')::JSONB END,
        x.m::JSONB, v_at, v_xid, x.c, x.d
    FROM unnest(p_ids, p_types, p_content_types, p_json, p_data, p_metadata, p_event_append,
                p_event_index) WITH ORDINALITY AS x(id, t, c, j, d, m, a, k, o)
    WHERE v_base[x.a] IS NOT NULL
    ORDER BY x.o;
    PERFORM set_config('strata.append', '', true);
END
$fn$;
