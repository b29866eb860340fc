//! Every statement the store runs, rendered once per store for its schema.

use crate::limits;

/// The columns of an event, in the order [`crate::read::event_from_row`] reads them.
const EVENT_COLUMNS: &str = "e.position, e.event_id, e.aggregate_id, e.version, e.created_at, \
     e.event_type, e.content_type, e.data_bytes, e.metadata::text";

/// The snapshot's xmin (every transaction below it has ended) and the newest position whose
/// transaction is below it: the readable head. Rows at or below `hi` are final (see
/// docs/guarantees.md, "PostgreSQL ordering").
///
/// `hi` is found by walking the position index down from the top, at most
/// [`limits::WATERMARK_SCAN_ROWS`] rows (usually one: only appends in flight lie above the
/// head); when none of them is below the watermark (a transaction older than all of them is
/// still open), `strata_readable_head` searches below them in O(log n) probes instead of the
/// walk going on through every row appended since.
const WATERMARK: &str = "SELECT w.xmin::text::bigint AS xmin,
            coalesce(
                (SELECT t.position FROM (
                    SELECT p.position, p.transaction_id FROM {schema}.events p
                     ORDER BY p.position DESC LIMIT {watermark_scan}) t
                  WHERE t.transaction_id < w.xmin ORDER BY t.position DESC LIMIT 1),
                (SELECT {schema}.strata_readable_head(w.xmin, k.position) FROM (
                    SELECT p.position FROM {schema}.events p
                     ORDER BY p.position DESC OFFSET {watermark_scan} - 1 LIMIT 1) k)
            ) AS hi,
            (SELECT p.position FROM {schema}.events p ORDER BY p.position LIMIT 1) AS lo
       FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) w";

/// Whether any stream may have lifecycle state: a metastream or a tombstone exists (two index
/// probes: the (aggregate_id, version) index over the metastreams' range, and the
/// (event_type, position) index).
const LIFECYCLE_EXISTS: &str = "(EXISTS (SELECT 1 FROM {schema}.events x
                      WHERE x.aggregate_id >= '$$' AND x.aggregate_id < '$%')
             OR EXISTS (SELECT 1 FROM {schema}.events t
                         WHERE t.event_type = '$streamTombstoned'))";

/// The common case of one append in one statement, without the plpgsql function: one
/// prepared plan instead of a function's statements. It appends only when the first event id
/// is new, the stream's last event is not its tombstone, and the expected version matches
/// (a soft-deleted stream exists for none; `NoStream` only for a stream without events: the
/// re-creation of a soft-deleted one is `strata_append`'s);
/// otherwise it writes nothing and the caller asks
/// `strata_append` for the precise answer. It follows the same order as `strata_append`:
/// the checks read the statement's snapshot (taken before anything else), then the critical
/// section (`l` and `r`, evaluated per row of `ok`, so only when appending) takes the lock,
/// the transaction id, the positions and the time, and `unl` records the last position and
/// time and releases the lock; the insert comes last. A failure in between leaves the lock
/// to the caller's `pg_advisory_unlock_all()`. `chk` also sets `strata.append`, which lets the
/// insert past the append-only guard (schema version 4, a statement-level trigger that fires
/// when `ins` starts, after the main query has read `chk`); the statement is its own
/// transaction, so the setting ends with it.
///
/// $1 stream, $2 category, $3 expected kind, $4 expected version, $5 ids, $6 types,
/// $7 content types, $8 json flags, $9 payloads, $10 metadata.
const APPEND_ONE: &str = "
WITH chk AS MATERIALIZED (
    SELECT l.version AS cur, l.event_type = '$streamTombstoned' AS tomb,
           -- Not soft-deleted: probed only for an expectation on an existing stream.
           CASE WHEN $3::smallint IN (2, 3) AND l.version IS NOT NULL
                THEN coalesce((SELECT (m.data ->> 'truncateBefore')::bigint
                                 FROM {schema}.events m
                                WHERE m.aggregate_id = '$$' || $1::text
                                ORDER BY m.version DESC LIMIT 1) <= l.version, true)
           END AS live,
           EXISTS (SELECT 1 FROM {schema}.events e WHERE e.event_id = ($5::uuid[])[1]) AS seen,
           set_config('strata.append', '{schema}', true) AS guard
      FROM (SELECT 1) AS one
      LEFT JOIN LATERAL (SELECT e.version, e.event_type FROM {schema}.events e
                          WHERE e.aggregate_id = $1 ORDER BY e.version DESC LIMIT 1) AS l ON true
), ok AS MATERIALIZED (
    SELECT c.cur FROM chk c
     WHERE NOT c.seen AND c.tomb IS NOT TRUE
       AND CASE $3::smallint WHEN 0 THEN true
                             WHEN 1 THEN c.cur IS NULL
                             WHEN 2 THEN c.cur IS NOT NULL AND c.live
                             ELSE c.cur IS NOT NULL AND c.cur = $4::bigint AND c.live END
), cs AS MATERIALIZED (
    SELECT ok.cur, r.x, r.p, r.us
      FROM ok,
           LATERAL (SELECT ok.cur AS dep, pg_advisory_lock({lock_key})::text AS locked) AS l,
           LATERAL (SELECT l.locked, pg_current_xact_id() AS x,
                           nextval('{schema}.events_position_seq') AS p,
                           greatest((extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
                                    (SELECT c.last_value FROM {schema}.recorded_at_clock c))
                               AS us) AS r
), unl AS MATERIALIZED (
    SELECT CASE WHEN cardinality($5::uuid[]) > 1
                THEN setval('{schema}.events_position_seq', cs.p + cardinality($5::uuid[]) - 1)
           END AS last_position,
           setval('{schema}.recorded_at_clock', cs.us) AS last_time,
           pg_advisory_unlock({lock_key}) AS unlocked
      FROM cs
), ins AS (
    INSERT INTO {schema}.events (position, event_id, aggregate_id, aggregate_type, event_type,
        version, data, metadata, created_at, transaction_id, content_type, data_bytes)
    SELECT cs.p + x.o - 1, x.id, $1, $2, x.t, coalesce(cs.cur, -1) + x.o,
           CASE WHEN x.j THEN convert_from(x.d, 'UTF8')::jsonb END, x.m::jsonb,
           'epoch'::timestamptz + cs.us * interval '1 microsecond', cs.x, x.c, x.d
      FROM cs, unnest($5::uuid[], $6::text[], $7::text[], $8::boolean[], $9::bytea[], $10::text[])
               WITH ORDINALITY AS x(id, t, c, j, d, m, o)
)
SELECT cs.p, cs.x::text::bigint, chk.cur, (SELECT count(*) FROM unl)
  FROM chk LEFT JOIN cs ON true";

/// The lifecycle state of the streams in `$1` (`text[]`): the last event of each one's
/// metastream (its metadata) and its own last event (version, and whether it is its
/// tombstone). No row at all while the store has no metastream and no tombstone, which a probe
/// of the (aggregate_id, version) index and one of the (event_type, position) index find out:
/// then no stream has lifecycle state.
const LIFECYCLES: &str = "
SELECT s.id,
       (SELECT m.data_bytes FROM {schema}.events m
         WHERE m.aggregate_id = '$$' || s.id ORDER BY m.version DESC LIMIT 1) AS metadata,
       l.version, l.event_type = '$streamTombstoned' AS tombstone
  FROM unnest($1::text[]) AS s(id)
  LEFT JOIN LATERAL (SELECT e.version, e.event_type FROM {schema}.events e
                      WHERE e.aggregate_id = s.id ORDER BY e.version DESC LIMIT 1) AS l ON true
 WHERE {lifecycle_exists}";

/// The lifecycle state of the stream `$1`, as one row: the last event of its metastream
/// (`metadata`), its last version (`last`) and whether that is its tombstone (`tombstone`).
const LIFECYCLE_OF_ONE: &str = "(
    SELECT (SELECT m.data_bytes FROM {schema}.events m
             WHERE m.aggregate_id = '$$' || $1::text ORDER BY m.version DESC LIMIT 1) AS metadata,
           l.version AS last, l.event_type = '$streamTombstoned' AS tombstone
      FROM (SELECT 1) AS one
      LEFT JOIN LATERAL (SELECT x.version, x.event_type FROM {schema}.events x
                          WHERE x.aggregate_id = $1 ORDER BY x.version DESC LIMIT 1) AS l ON true)";

/// A forward filtered read of `$all` driven by the index on (`column`, position): a k-way merge
/// of the first rows after the cursor of each key (category or event type) in `$8`, so its
/// cost follows the matching events, not the table. Nothing above the readable head `hi` (and
/// `max_position`) is read, as for every `$all` read.
///
/// Without `residual`, every row of a key matches: each key gives its first `$7` (the limit)
/// positions from the index alone, the first `$7` of them all are the page.
///
/// With `residual` (the rest of the filter, checked on each row), each key examines at most
/// `$3` rows; a key that found fewer than `$7` matches among them may have more past its
/// `$3`-th row, so the read stops at the lowest such position, `cut`, and returns it: the
/// page then holds the matches at or below `cut`, and the caller continues after it.
///
/// Every scan of a key is ordered by (`column`, position) and reads only positions, so the
/// index alone answers it (index-only); the residual columns are then fetched row by row by
/// position (the `LIMIT 1` lateral keeps that a nested loop, which stops at the page's last
/// match). Reading the residual columns in the same scan lets the planner prefer the position
/// index with a filter for a key it cannot estimate (a generic plan, a key from an array),
/// which is the table scan this avoids.
///
/// $1 from (inclusive), $2 newest allowed (max_position), $3 rows examined per key (with
/// residual), $4 event types, $5 categories, $6 stream prefix, $7 limit, $8 keys.
fn indexed_forward(column: &str, residual: Option<&str>) -> String {
    let keyed = |alias: &str| {
        format!("{alias}.{column} = k.key AND {alias}.position >= $1 AND {alias}.position <= t.top")
    };
    let (m, cut) = match residual {
        None => (
            format!(
                "SELECT k.key, x.position FROM k CROSS JOIN t CROSS JOIN LATERAL (
                     SELECT e.position FROM {{schema}}.events e WHERE {}
                      ORDER BY e.{column}, e.position LIMIT $7) x",
                keyed("e")
            ),
            "SELECT NULL::bigint AS cut".to_owned(),
        ),
        Some(filter) => (
            format!(
                "SELECT k.key, x.position FROM k CROSS JOIN t CROSS JOIN LATERAL (
                     SELECT c.position FROM (
                         SELECT e.position FROM {{schema}}.events e WHERE {}
                          ORDER BY e.{column}, e.position LIMIT $3) c
                     CROSS JOIN LATERAL (
                         SELECT e.event_type, e.aggregate_type, e.aggregate_id
                           FROM {{schema}}.events e WHERE e.position = c.position LIMIT 1) e
                      WHERE true {filter}
                      ORDER BY c.position LIMIT $7) x",
                keyed("e")
            ),
            format!(
                "SELECT min(cp.position) AS cut
                   FROM k LEFT JOIN (SELECT m.key, count(*) AS n FROM m GROUP BY m.key) g
                          ON g.key = k.key
                  CROSS JOIN t CROSS JOIN LATERAL (
                     SELECT p.position FROM {{schema}}.events p WHERE {}
                      ORDER BY p.{column}, p.position OFFSET $3 - 1 LIMIT 1) cp
                  WHERE coalesce(g.n, 0) < $7",
                keyed("p")
            ),
        ),
    };
    // Every variant is bound with the same list; the client sends each parameter's type,
    // so a variant that leaves some unused is fine.
    format!(
        "WITH h AS MATERIALIZED ({{watermark}}),
              t AS MATERIALIZED (SELECT least(coalesce(h.hi, -1), $2::bigint) AS top FROM h),
              k AS MATERIALIZED (SELECT unnest($8::text[]) AS key),
              m AS MATERIALIZED ({m}),
              c AS MATERIALIZED ({cut})
         SELECT h.xmin, h.hi, h.lo, {{lifecycle_exists}} AS lc, c.cut, {{cols}} FROM h CROSS JOIN c LEFT JOIN LATERAL (
             SELECT e.* FROM (SELECT m.position FROM m
                               WHERE m.position <= coalesce(c.cut, m.position)
                               ORDER BY m.position LIMIT $7) s
               JOIN {{schema}}.events e ON e.position = s.position
              ORDER BY e.position) e ON true"
    )
}

pub(crate) struct Sql {
    pub append: String,
    pub append_one: String,
    pub first_used_id: String,
    pub read_range: String,
    pub earlier_appends: String,
    pub read_all_forward: String,
    pub read_all_backward: String,
    pub read_all_by_category: String,
    pub read_all_by_category_filtered: String,
    pub read_all_by_type: String,
    pub read_all_by_type_filtered: String,
    pub head: String,
    pub watermark_status: String,
    pub position_at: String,
    pub read_stream_forward: String,
    pub read_stream_backward: String,
    pub read_stream_forward_lifecycle: String,
    pub read_stream_backward_lifecycle: String,
    pub stream_first: String,
    pub stream_info: String,
    pub list_streams: String,
    pub list_categories: String,
    pub notify: String,
    pub save_snapshot: String,
    pub load_snapshot: String,
    pub load_snapshot_and_events: String,
    pub delete_snapshots: String,
    pub lifecycles: String,
    pub lifecycle_exists: String,
    pub scavenge: crate::scavenge::ScavengeSql,
    pub archive: crate::archive::ArchiveSql,
}

impl Sql {
    pub(crate) fn new(schema: &str) -> Sql {
        let lock_key = crate::migrate::append_lock_key(schema).to_string();
        let r = |s: &str| {
            s.replace("{lock_key}", &lock_key)
                .replace("{watermark}", WATERMARK)
                .replace("{lifecycle_exists}", LIFECYCLE_EXISTS)
                .replace("{watermark_scan}", &limits::WATERMARK_SCAN_ROWS.to_string())
                .replace("{cols}", EVENT_COLUMNS)
                .replace("{schema}", schema)
        };
        // $1 from (inclusive), $2 newest allowed (max_position), $3 window end (exclusive),
        // $4 event types, $5 categories, $6 stream prefix, $7 limit.
        let filter = "AND (cardinality($4::text[]) = 0 OR e.event_type = ANY($4::text[]))
                  AND (cardinality($5::text[]) = 0 OR e.aggregate_type = ANY($5::text[]))
                  AND ($6::text IS NULL OR starts_with(e.aggregate_id, $6::text))";
        let stream_ids = "WITH RECURSIVE s(id) AS (
                (SELECT e.aggregate_id FROM {schema}.events e
                  WHERE e.aggregate_id > $1::text AND e.aggregate_id >= $2::text
                  ORDER BY e.aggregate_id LIMIT 1)
              UNION ALL
                SELECT (SELECT e.aggregate_id FROM {schema}.events e
                         WHERE e.aggregate_id > s.id ORDER BY e.aggregate_id LIMIT 1)
                  FROM s WHERE s.id IS NOT NULL AND starts_with(s.id, $2::text)
            )";
        Sql {
            lifecycles: r(LIFECYCLES),
            lifecycle_exists: r(&format!("SELECT {LIFECYCLE_EXISTS}")),
            scavenge: crate::scavenge::ScavengeSql::new(&r),
            archive: crate::archive::ArchiveSql::new(&r),
            append_one: r(APPEND_ONE),
            append: r(
                "SELECT * FROM {schema}.strata_append($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                 $10, $11, $12, $13)",
            ),
            first_used_id: r(
                "SELECT x.id FROM unnest($1::uuid[]) WITH ORDINALITY AS x(id, o)
                 WHERE EXISTS (SELECT 1 FROM {schema}.events e WHERE e.event_id = x.id)
                 ORDER BY x.o LIMIT 1",
            ),
            // $1 from, $2 through (both inclusive), $3 limit; no watermark (see transaction.rs).
            read_range: r("SELECT {cols} FROM {schema}.events e
                 WHERE e.position >= $1 AND e.position <= $2 ORDER BY e.position LIMIT $3"),
            // Only once this transaction has an id (pg_current_xact_id() would assign one).
            // `o`: the other transactions of this database with an older id that hold (or
            // await) a lock on the events table: every append locks it (its checks read it)
            // before its critical section and keeps the lock to its end, so those are exactly
            // the older appends still running (see transaction.rs); unlike the snapshot's xmin,
            // unrelated old transactions (other schemas, other databases) do not count. They
            // are matched to their id by virtual transaction, not pid, so that a prepared
            // transaction (no pid) counts too. `f`: the sessions those of them that wait for a
            // lock wait for, directly or through others. 0: none runs. 2: one of them waits
            // for this transaction, so it cannot end first. 1: otherwise (wait).
            earlier_appends: r("WITH RECURSIVE o AS MATERIALIZED (
                     SELECT r.pid FROM pg_locks r JOIN pg_locks t
                         ON t.virtualtransaction = r.virtualtransaction
                      WHERE r.locktype = 'relation'
                        AND r.database = (SELECT d.oid FROM pg_database d
                                           WHERE d.datname = current_database())
                        AND r.relation = '{schema}.events'::regclass
                        AND r.pid IS DISTINCT FROM pg_backend_pid()
                        AND t.locktype = 'transactionid' AND t.granted
                        AND age(t.transactionid) > age(pg_current_xact_id()::xid)),
                 f(pid) AS (SELECT l.pid FROM pg_locks l
                             WHERE NOT l.granted AND l.pid IN (SELECT o.pid FROM o)
                            UNION SELECT b.blocker FROM f
                             CROSS JOIN LATERAL unnest(pg_blocking_pids(f.pid)) AS b(blocker))
                 SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM o) THEN 0::int4
                             WHEN pg_backend_pid() IN (SELECT f.pid FROM f) THEN 2::int4
                             ELSE 1::int4 END"),
            read_all_forward: r(&format!(
                "WITH h AS MATERIALIZED ({{watermark}})
                 SELECT h.xmin, h.hi, h.lo, {{lifecycle_exists}} AS lc, {{cols}} FROM h LEFT JOIN LATERAL (
                     SELECT * FROM {{schema}}.events e
                      WHERE e.position >= $1 AND e.position <= least(coalesce(h.hi, -1), $2)
                        AND e.position < $3
                        {filter}
                      ORDER BY e.position LIMIT $7) e ON true"
            )),
            read_all_by_category: r(&indexed_forward("aggregate_type", None)),
            read_all_by_category_filtered: r(&indexed_forward("aggregate_type", Some(filter))),
            read_all_by_type: r(&indexed_forward("event_type", None)),
            read_all_by_type_filtered: r(&indexed_forward("event_type", Some(filter))),
            read_all_backward: r(&format!(
                "WITH h AS MATERIALIZED ({{watermark}})
                 SELECT h.xmin, h.hi, h.lo, {{lifecycle_exists}} AS lc, {{cols}} FROM h LEFT JOIN LATERAL (
                     SELECT * FROM {{schema}}.events e
                      WHERE e.position <= least(coalesce(h.hi, -1), $2, $1)
                        AND e.position > least(coalesce(h.hi, -1), $2, $1) - $3
                        {filter}
                      ORDER BY e.position DESC LIMIT $7) e ON true"
            )),
            head: r("{watermark}"),
            // The watermark, the newest position, the oldest committed row above the head
            // (with how long ago it was appended) and, when there is one, the transaction at
            // the watermark: a session (pg_stat_activity.backend_xid is a 32-bit xid) or a
            // prepared transaction.
            watermark_status: r("WITH w AS MATERIALIZED ({watermark}),
                      f AS MATERIALIZED (
                          SELECT e.position, e.created_at FROM w, {schema}.events e
                           WHERE e.position > coalesce(w.hi, -1) ORDER BY e.position LIMIT 1)
                 SELECT w.xmin, w.hi,
                        (SELECT p.position FROM {schema}.events p ORDER BY p.position DESC LIMIT 1),
                        f.position,
                        extract(epoch FROM clock_timestamp() - f.created_at)::float8,
                        a.pid, a.datname::text, a.usename::text, a.application_name::text,
                        a.state::text, extract(epoch FROM clock_timestamp() - a.xact_start)::float8,
                        x.gid::text, x.database::text,
                        extract(epoch FROM clock_timestamp() - x.prepared)::float8
                   FROM w LEFT JOIN f ON true
                   LEFT JOIN LATERAL (
                       SELECT s.* FROM pg_stat_activity s
                        WHERE f.position IS NOT NULL
                          AND s.backend_xid = (w.xmin % 4294967296)::text::xid LIMIT 1) a ON true
                   LEFT JOIN LATERAL (
                       SELECT p.* FROM pg_prepared_xacts p
                        WHERE f.position IS NOT NULL
                          AND p.transaction = (w.xmin % 4294967296)::text::xid LIMIT 1) x ON true"),
            position_at: r("WITH h AS MATERIALIZED ({watermark})
                 SELECT h.xmin, {schema}.strata_position_at($1, h.hi) FROM h"),
            read_stream_forward: r("SELECT {cols} FROM {schema}.events e
                 WHERE e.aggregate_id = $1 AND e.version >= $2 AND e.position <= $3
                 ORDER BY e.version LIMIT $4"),
            read_stream_backward: r("SELECT {cols} FROM {schema}.events e
                 WHERE e.aggregate_id = $1 AND e.version <= $2 AND e.position <= $3
                 ORDER BY e.version DESC LIMIT $4"),
            // The same reads with the stream's lifecycle state on every row (one row of NULL
            // event columns when none matched): its metadata, its last version and whether
            // that is its tombstone, two probes of the primary index in the same statement.
            read_stream_forward_lifecycle: r(&format!(
                "SELECT {{cols}}, lc.metadata, lc.last, lc.tombstone FROM {LIFECYCLE_OF_ONE} lc
                 LEFT JOIN LATERAL (SELECT * FROM {{schema}}.events e
                     WHERE e.aggregate_id = $1 AND e.version >= $2 AND e.position <= $3
                     ORDER BY e.version LIMIT $4) e ON true
                 ORDER BY e.version"
            )),
            read_stream_backward_lifecycle: r(&format!(
                "SELECT {{cols}}, lc.metadata, lc.last, lc.tombstone FROM {LIFECYCLE_OF_ONE} lc
                 LEFT JOIN LATERAL (SELECT * FROM {{schema}}.events e
                     WHERE e.aggregate_id = $1 AND e.version <= $2 AND e.position <= $3
                     ORDER BY e.version DESC LIMIT $4) e ON true
                 ORDER BY e.version DESC"
            )),
            stream_first: r("SELECT e.position FROM {schema}.events e
                 WHERE e.aggregate_id = $1 ORDER BY e.version LIMIT 1"),
            stream_info: r("SELECT l.version, l.position, l.created_at,
                    (SELECT f.created_at FROM {schema}.events f
                      WHERE f.aggregate_id = $1 ORDER BY f.version LIMIT 1) AS first_at,
                    (SELECT m.data_bytes FROM {schema}.events m
                      WHERE m.aggregate_id = '$$' || $1::text
                      ORDER BY m.version DESC LIMIT 1) AS metadata,
                    l.event_type = '$streamTombstoned' AS tombstone
                 FROM (SELECT e.version, e.position, e.created_at, e.event_type
                         FROM {schema}.events e
                        WHERE e.aggregate_id = $1 ORDER BY e.version DESC LIMIT 1) l"),
            // $1 after (exclusive, '' for none), $2 prefix ('' for none), $3 limit.
            list_streams: r(&format!(
                "{stream_ids}
                 SELECT s.id, l.version, l.position FROM s
                 CROSS JOIN LATERAL (SELECT e.version, e.position FROM {{schema}}.events e
                                      WHERE e.aggregate_id = s.id
                                      ORDER BY e.version DESC LIMIT 1) l
                 WHERE s.id IS NOT NULL AND starts_with(s.id, $2::text)
                 LIMIT $3"
            )),
            // $1 after (exclusive, '' for none), $2 prefix ('' for none), $3 limit. Skips from
            // one category to the next over `events_stream_starts` (one entry per stream), so
            // it reads only the categories of the page, and for each only its streams: their
            // ids from that index, their last versions from `idx_aggregate`, both index-only.
            // Versions are dense from 0, so a stream holds its last version + 1 events.
            list_categories: r("WITH RECURSIVE c(cat) AS (
                     (SELECT e.aggregate_type FROM {schema}.events e
                       WHERE e.version = 0 AND e.aggregate_type > $1::text
                         AND e.aggregate_type >= $2::text
                       ORDER BY e.aggregate_type LIMIT 1)
                   UNION ALL
                     SELECT (SELECT e.aggregate_type FROM {schema}.events e
                              WHERE e.version = 0 AND e.aggregate_type > c.cat
                              ORDER BY e.aggregate_type LIMIT 1)
                       FROM c WHERE c.cat IS NOT NULL AND starts_with(c.cat, $2::text)
                 ), p AS (
                     SELECT c.cat FROM c
                      WHERE c.cat IS NOT NULL AND starts_with(c.cat, $2::text) LIMIT $3)
                 SELECT p.cat, n.streams, n.events FROM p CROSS JOIN LATERAL (
                     SELECT count(*) AS streams, coalesce(sum(l.version + 1), 0)::bigint AS events
                       FROM {schema}.events s CROSS JOIN LATERAL (
                           SELECT e.version FROM {schema}.events e
                            WHERE e.aggregate_id = s.aggregate_id
                            ORDER BY e.version DESC LIMIT 1) l
                      WHERE s.aggregate_type = p.cat AND s.version = 0) n
                  ORDER BY p.cat"),
            // A wake-up needs no durability: commit it without waiting for the WAL flush.
            notify: format!(
                "BEGIN; SET LOCAL synchronous_commit TO off; \
                 SELECT pg_notify('strata_{schema}', ''); COMMIT;"
            ),
            save_snapshot: r("INSERT INTO {schema}.snapshots
                   (stream_id, stream_version, schema_version, data, taken_at, taken_at_nanos)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (stream_id, stream_version) DO UPDATE SET
                   schema_version = EXCLUDED.schema_version, data = EXCLUDED.data,
                   taken_at = EXCLUDED.taken_at, taken_at_nanos = EXCLUDED.taken_at_nanos"),
            load_snapshot: r(
                "SELECT stream_version, schema_version, data, taken_at, taken_at_nanos
                 FROM {schema}.snapshots
                 WHERE stream_id = $1 AND stream_version <= $2 AND schema_version = $3
                 ORDER BY stream_version DESC LIMIT 1",
            ),
            // $1 stream, $2 schema version, $3 limit. One row per event after the newest
            // snapshot (one row of NULL events when there is none), the snapshot's columns on
            // each; its data only on the first (versions are dense, so the first event after
            // it is the next version), so that a large snapshot crosses the wire once. No events
            // for a stream with metadata (a metastream) or a tombstone: what readers see of it
            // is the lifecycle's to say, and the caller reads it through `read_stream`.
            load_snapshot_and_events: r("SELECT s.stream_version,
                    CASE WHEN e.version IS NULL OR e.version = s.stream_version + 1
                         THEN s.data END,
                    s.taken_at, s.taken_at_nanos, {cols}
                 FROM (SELECT 1) AS one
                 LEFT JOIN LATERAL (
                     SELECT x.stream_version, x.data, x.taken_at, x.taken_at_nanos
                       FROM {schema}.snapshots x
                      WHERE x.stream_id = $1 AND x.schema_version = $2
                      ORDER BY x.stream_version DESC LIMIT 1) s ON true
                 LEFT JOIN LATERAL (
                     SELECT * FROM {schema}.events e
                      WHERE e.aggregate_id = $1 AND e.version > coalesce(s.stream_version, -1)
                        AND NOT EXISTS (SELECT 1 FROM {schema}.events m
                                         WHERE m.aggregate_id = '$$' || $1::text)
                        AND (SELECT t.event_type FROM {schema}.events t
                              WHERE t.aggregate_id = $1 ORDER BY t.version DESC LIMIT 1)
                            IS DISTINCT FROM '$streamTombstoned'
                      ORDER BY e.version LIMIT $3) e ON true
                 ORDER BY e.version"),
            delete_snapshots: r("DELETE FROM {schema}.snapshots WHERE stream_id = $1"),
        }
    }
}
